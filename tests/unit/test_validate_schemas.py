"""deploy/validate/schemas.py: the conversions that feed kubeconform, on small inputs (no network).

The real schemas are checked end to end by tests/unit/test_k8s_manifests.py (every resource valid,
broken ones refused); these pin the conversion rules whose absence would turn into false errors
(or silently lax schemas) there.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from deploy.validate import schemas

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {x-kubernetes-int-or-string: true}
                note: {type: string, nullable: true}
                free: {type: object, x-kubernetes-preserve-unknown-fields: true, properties: {a: {type: string}}}
                op: {type: string, enum: [=, "!="]}
"""


def _widget(tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / "crd.yaml"
    source.write_text(CRD, encoding="utf-8")
    (written,) = schemas.write_crd_schemas(tmp_path / "out", [source])
    assert written == tmp_path / "out" / "example.com" / "widget_v1.json"
    loaded: dict[str, Any] = json.loads(written.read_text(encoding="utf-8"))
    return loaded


def test_crd_objects_become_strict_but_preserved_ones_stay_open(tmp_path: Path) -> None:
    schema = _widget(tmp_path)
    assert "additionalProperties" not in schema, "the root keeps apiVersion/kind/metadata open"
    spec = schema["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert "additionalProperties" not in spec["properties"]["free"]


def test_openapi_forms_become_json_schema(tmp_path: Path) -> None:
    props = _widget(tmp_path)["properties"]["spec"]["properties"]
    assert props["size"]["oneOf"] == [{"type": "string"}, {"type": "integer"}]
    assert props["note"]["type"] == ["string", "null"]
    assert props["op"]["enum"] == ["=", "!="], "a bare = is YAML 1.1's value tag: read as the string"


def test_crds_are_read_from_jars_without_the_old_api_copies(tmp_path: Path) -> None:
    jar = tmp_path / "operator-api.jar"
    with zipfile.ZipFile(jar, "w") as archive:
        archive.writestr("META-INF/fabric8/widgets.example.com-v1.yml", CRD)
        archive.writestr("META-INF/fabric8/widgets.example.com-v1beta1.yml", "not: [valid")
    (crd,) = schemas.crd_documents([jar])
    assert crd["spec"]["names"]["kind"] == "Widget"


def test_widen_enum_adds_only_missing_values(tmp_path: Path) -> None:
    _widget(tmp_path)
    path = tmp_path / "out" / "example.com" / "widget_v1.json"
    assert schemas.widen_enum(path, ("spec", "op"), ["=", "~"]) == ["=", "!=", "~"]
    assert (
        json.loads(path.read_text(encoding="utf-8"))["properties"]["spec"]["properties"]["op"]["enum"][-1]
        == "~"
    )


def test_kubernetes_schemas_become_self_contained(tmp_path: Path) -> None:
    src = tmp_path / "wheel"
    definitions = {
        "$defs": {
            "io.k8s.Pod": {
                "type": "object",
                "properties": {"spec": {"$ref": "/api/_definitions.json#/$defs/io.k8s.Spec"}},
            },
            "io.k8s.Spec": {"type": "object", "properties": {"n": {"type": "integer"}}},
            "io.k8s.Unused": {"type": "string"},
        }
    }
    for variant in ("", "-strict"):
        folder = src / f"v1.37.0-local{variant}"
        folder.mkdir(parents=True)
        (folder / "_definitions.json").write_text(json.dumps(definitions), encoding="utf-8")
        pod = {"$id": "https://kubernetes.io/api/pod", "$ref": "/api/_definitions.json#/$defs/io.k8s.Pod"}
        (folder / "pod-v1.json").write_text(json.dumps(pod), encoding="utf-8")
    assert schemas.standalone_kubernetes(src, tmp_path / "out", "1.37.0") == 1
    converted = json.loads(
        (tmp_path / "out" / "v1.37.0-standalone-strict" / "pod-v1.json").read_text(encoding="utf-8")
    )
    assert "$id" not in converted, "an $id would make kubeconform resolve refs over HTTPS"
    assert converted["$ref"] == "#/$defs/io.k8s.Pod"
    assert set(converted["$defs"]) == {"io.k8s.Pod", "io.k8s.Spec"}, "only the definitions it reaches"
    assert converted["$defs"]["io.k8s.Pod"]["properties"]["spec"]["$ref"] == "#/$defs/io.k8s.Spec"
