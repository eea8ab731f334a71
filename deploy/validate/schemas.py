"""JSON schemas kubeconform reads offline: Kubernetes' own, and the operators' CRDs converted.

Kubernetes' schemas come from the ``kubernetes-validate`` wheel (PyPI), which ships them per minor
version as ``<kind>[-<group>]-<version>.json``, kubeconform's own file names. Used as they are,
kubeconform answers "could not find schema" with no reason: every file carries
``$id: https://kubernetes.io/...`` and ``$ref: /api/_definitions.json#/...``, which resolve to a URL
it then cannot fetch. :func:`standalone_kubernetes` writes self-contained copies (each file gets
the definitions it reaches in its own ``$defs``), in kubeconform's default layout
``v<version>-standalone[-strict]/``.

CRDs become ``<group>/<kind>_<version>.json`` as kubeconform's ``openapi2jsonschema.py`` makes them
(``additionalProperties: false`` wherever ``properties`` is set, int-or-string as string|integer),
with three differences that would otherwise be false errors: objects marked
``x-kubernetes-preserve-unknown-fields`` keep accepting any key, ``nullable: true`` lets the type
be null, and a bare ``=`` in a YAML enum (Gateway API) reads as a string.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

_EXTERNAL = "/api/_definitions.json#/$defs/"
_LOCAL = "#/$defs/"


# --- Kubernetes' own schemas ------------------------------------------------------------------


def _localise(node: Any, found: set[str]) -> Any:
    """``node`` with external definition refs made local; the names it refers to go to ``found``."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                ref = _LOCAL + value[len(_EXTERNAL) :] if value.startswith(_EXTERNAL) else value
                if ref.startswith(_LOCAL):
                    found.add(ref[len(_LOCAL) :])
                out[key] = ref
                continue
            out[key] = _localise(value, found)
        return out
    if isinstance(node, list):
        return [_localise(item, found) for item in node]
    return node


def _standalone_dir(src: Path, dst: Path) -> int:
    definitions = json.loads((src / "_definitions.json").read_text(encoding="utf-8"))["$defs"]
    dst.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(src.glob("*.json")):
        if path.name in ("_definitions.json", "all.json"):
            continue
        schema = json.loads(path.read_text(encoding="utf-8"))
        schema.pop("$id", None)
        needed: set[str] = set()
        schema = _localise(schema, needed)
        local: dict[str, Any] = {}
        queue = list(needed)
        while queue:
            name = queue.pop()
            if name in local:
                continue
            more: set[str] = set()
            local[name] = _localise(definitions[name], more)
            queue.extend(more - local.keys())
        if local:
            schema["$defs"] = local
        (dst / path.name).write_text(json.dumps(schema, separators=(",", ":")), encoding="utf-8")
        count += 1
    return count


def standalone_kubernetes(wheel_schemas: Path, out: Path, version: str) -> int:
    """Write ``out/v<version>-standalone[-strict]/`` from the wheel's ``v<version>-local[-strict]/``;
    returns the number of schemas written per variant."""
    counts = {
        _standalone_dir(wheel_schemas / f"v{version}-local{strict}", out / f"v{version}-standalone{strict}")
        for strict in ("", "-strict")
    }
    return max(counts)


# --- CRDs -------------------------------------------------------------------------------------


class _CrdLoader(yaml.SafeLoader):
    """Reads a bare ``=`` (YAML 1.1's 'value' tag, in Gateway API enums) as the string it is."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: str(node.value))


def _strict(node: Any, root: bool = True) -> Any:
    if isinstance(node, dict):
        out = {key: _strict(value, root=False) for key, value in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
            and not root  # as upstream: the root (apiVersion, kind, metadata...) stays open
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(item, root=False) for item in node]
    return node


def _openapi_to_json_schema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: _openapi_to_json_schema(value) for key, value in node.items()}
        if out.get("format") == "int-or-string" or out.get("x-kubernetes-int-or-string"):
            out.pop("format", None)
            out.pop("type", None)
            out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
        if out.get("nullable") is True and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_openapi_to_json_schema(item) for item in node]
    return node


def _documents(text: str) -> Iterator[dict[str, Any]]:
    for doc in yaml.load_all(text, Loader=_CrdLoader):
        if not isinstance(doc, dict):
            continue
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            yield from (item for item in doc["items"] if isinstance(item, dict))
        else:
            yield doc


def crd_documents(sources: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every CustomResourceDefinition in YAML files, folders of them, or jars (fabric8's
    ``META-INF/fabric8/*-v1.yml``; the ``-v1beta1.yml`` copies are the old CRD API's format)."""
    for path in sources:
        if path.is_dir():
            yield from crd_documents(sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]))
            continue
        texts: list[str] = []
        if path.suffix in (".jar", ".zip"):
            with zipfile.ZipFile(path) as archive:
                texts = [
                    archive.read(name).decode("utf-8")
                    for name in sorted(archive.namelist())
                    if name.endswith((".yaml", ".yml")) and not name.endswith("-v1beta1.yml")
                ]
        else:
            texts = [path.read_text(encoding="utf-8")]
        for text in texts:
            if "CustomResourceDefinition" in text:
                yield from (doc for doc in _documents(text) if doc.get("kind") == "CustomResourceDefinition")


def crd_schemas(crd: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(group, kind, version, JSON schema) for every served version of one CRD."""
    spec = crd["spec"]
    group, kind = str(spec["group"]), str(spec["names"]["kind"])
    for version in spec.get("versions") or []:
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema:
            yield group, kind, str(version["name"]), _strict(_openapi_to_json_schema(schema))


def write_crd_schemas(out: Path, sources: Iterable[Path]) -> list[Path]:
    """Convert every CRD of ``sources`` into ``out/<group>/<kind>_<version>.json`` (lower case)."""
    written: list[Path] = []
    for crd in crd_documents(sources):
        for group, kind, version, schema in crd_schemas(crd):
            target = out / group.lower() / f"{kind.lower()}_{version.lower()}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(schema, indent=1), encoding="utf-8")
            written.append(target)
    return written


def widen_enum(schema_file: Path, pointer: tuple[str, ...], values: Iterable[str]) -> list[str]:
    """Add ``values`` to the enum at ``pointer`` (a path of property names) of a written schema;
    returns the enum as it now is. Used for the one field whose newer values no CRD here has."""
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    node = schema
    for name in pointer:
        node = node["properties"][name]
    enum = [str(value) for value in node["enum"]]
    enum.extend(value for value in values if value not in enum)
    node["enum"] = enum
    schema_file.write_text(json.dumps(schema, indent=1), encoding="utf-8")
    return enum
