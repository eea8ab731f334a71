"""deploy/k8s agrees with the platform it deploys (no cluster needed).

The manifests cannot be applied here, so they are checked by kubeconform against Kubernetes' and
the operators' schemas (deploy/validate, which fetches and builds the tools), and against the
sources of truth: the launcher's registry of platform processes (``deploy/stack/platform.py``),
each process's settings dataclass, the topic registry, the index templates' lifecycle policies,
the Prometheus rule files, and the versions that docker-compose.yml and the installed clients pin.
docs/architecture.md explains the design the manifests describe; docs/deployment.md what is
validated and what cannot be.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from deploy.render import CLUSTER_BROKERS, kafka_topics_yaml
from deploy.stack.cluster_services import S3_PLUGIN
from deploy.stack.platform import REGISTRY, PlatformProcess, platform_processes
from deploy.stack.topology import Topology
from deploy.validate import checks, toolchain
from flink_jobs.rides_job import checkpoint_uri, on_cluster
from flink_jobs.settings import StreamSettings
from indexer.settings import IndexerSettings
from ingest_service.settings import ApiSettings
from persister.settings import PersisterSettings
from xrides.search.templates import LIFECYCLE_DAYS, lifecycle_policy
from xrides.settings import PREFIX, load_settings
from xrides.topics import TOPICS, Topic

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
RULES = REPO / "dashboards" / "prometheus" / "rules"
COMPOSE_FILE = REPO / "docker-compose.yml"

PLACEHOLDER = "REPLACE_ME"
# Secret keys that are not credentials (a user name, role names, a role definition).
NOT_SECRET_KEYS = {"username", "roles", "roles.yml"}
# Secrets their operators generate (CloudNativePG, ECK), with the keys the manifests may read.
GENERATED_SECRETS = {
    "xrides-pg-app": {"uri", "username", "password", "host", "port", "dbname"},
    "xrides-es-elastic-user": {"elastic"},
}
# The PostgreSQL role each container logs in as (xrides/db/migrations/0004_roles.sql); `migrate`
# runs as the owner (the operator's generated xrides-pg-app).
PG_ROLE_SECRETS = {
    "persister": "xrides-pg-writer",
    "api": "xrides-pg-reader",
    "reconcile": "xrides-pg-reader",
    "archiver": "xrides-pg-archiver",
    "query-service": "xrides-pg-reader",
}
# Packages whose settings the XRIDES_* variables of a container are checked against.
SETTINGS_PACKAGES = (
    "ingest_service",
    "persister",
    "flink_jobs",
    "indexer",
    "archiver",
    "reconcile",
    "query_dsl",
    "query_service",
)
COMPOSE_FLINK_CLIENT = REPO / "deploy" / "compose" / "flink" / "client" / "config.yaml"
FLINK_DOCKERFILE = REPO / "deploy" / "compose" / "flink" / "Dockerfile"

Doc = dict[str, Any]


# --- loading ---------------------------------------------------------------------------------


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != KUSTOMIZATION.name)


def _load_all() -> list[tuple[str, Doc]]:
    docs: list[tuple[str, Doc]] = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
            docs.append((path.name, doc))
    return docs


@pytest.fixture(scope="module")
def documents() -> list[tuple[str, Doc]]:
    return _load_all()


@pytest.fixture(scope="module")
def objects(documents: list[tuple[str, Doc]]) -> list[Doc]:
    return [doc for _, doc in documents]


def _of_kind(objects: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in objects if doc.get("kind") == kind}


def _one(objects: list[Doc], kind: str, name: str) -> Doc:
    found = _of_kind(objects, kind)
    assert name in found, f"no {kind} named {name!r} in deploy/k8s (have {sorted(found)})"
    return found[name]


# --- pods, containers, environment -------------------------------------------------------------


def _pod_specs(doc: Doc) -> Iterator[Doc]:
    """Every pod spec a resource carries (workloads, CronJobs, Flink, ECK node sets)."""
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield spec["template"]["spec"]
    elif kind == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "FlinkDeployment":
        for holder in (spec, spec.get("jobManager") or {}, spec.get("taskManager") or {}):
            template = holder.get("podTemplate")
            if template:
                yield template["spec"]
    elif kind == "Elasticsearch":
        for node_set in spec.get("nodeSets") or []:
            if node_set.get("podTemplate"):
                yield node_set["podTemplate"]["spec"]
    elif kind == "Kibana" and spec.get("podTemplate"):
        yield spec["podTemplate"]["spec"]


def _containers(doc: Doc) -> Iterator[Doc]:
    for pod in _pod_specs(doc):
        yield from pod.get("initContainers") or []
        yield from pod.get("containers") or []


def _module_of(doc: Doc, container: Doc) -> str | None:
    """The Python module a container runs (``python -m X``, or Flink's ``-pym X``)."""
    command = [str(part) for part in (container.get("command") or []) + (container.get("args") or [])]
    if "-m" in command and command.index("-m") + 1 < len(command):
        return command[command.index("-m") + 1]
    if doc.get("kind") == "FlinkDeployment" and container.get("name") == "flink-main-container":
        args = [str(a) for a in doc["spec"]["job"].get("args") or []]
        if "-pym" in args:
            return args[args.index("-pym") + 1]
    return None


def _env(container: Doc) -> dict[str, Doc]:
    return {str(item["name"]): item for item in container.get("env") or []}


def _literal_env(container: Doc) -> dict[str, str]:
    return {name: str(item["value"]) for name, item in _env(container).items() if "value" in item}


def _settings_classes(package: str) -> list[type[Any]]:
    """The ``*Settings`` dataclasses defined in ``<package>.settings`` (empty when it does not exist)."""
    try:
        module = importlib.import_module(f"{package}.settings")
    except ModuleNotFoundError as exc:
        if exc.name in (package, f"{package}.settings"):
            return []
        raise
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__
        and dataclasses.is_dataclass(cls)
        and cls.__name__.endswith("Settings")
    ]


def _field_names(classes: list[type[Any]]) -> set[str]:
    return {field.name for cls in classes for field in dataclasses.fields(cls)}


ALL_FIELDS = _field_names([cls for package in SETTINGS_PACKAGES for cls in _settings_classes(package)])


def _platform_containers(objects: list[Doc]) -> Iterator[tuple[Doc, Doc, str | None]]:
    """(resource, container, module) of every container that reads XRIDES_* variables."""
    for doc in objects:
        for container in _containers(doc):
            if any(name.startswith(PREFIX) for name in _env(container)):
                yield doc, container, _module_of(doc, container)


def _where(doc: Doc, container: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']} container {container.get('name')!r}"


# --- the manifests themselves ------------------------------------------------------------------


def test_every_manifest_has_api_version_kind_and_name(documents: list[tuple[str, Doc]]) -> None:
    assert documents, "deploy/k8s holds no manifests"
    seen: set[tuple[str, str]] = set()
    for filename, doc in documents:
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], f"{filename}: no apiVersion"
        assert isinstance(doc.get("kind"), str) and doc["kind"], f"{filename}: no kind"
        name = (doc.get("metadata") or {}).get("name")
        assert isinstance(name, str) and name, f"{filename}: a {doc['kind']} has no metadata.name"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), (
            f"{filename}: {name!r} is not a DNS name"
        )
        key = (doc["kind"], name)
        assert key not in seen, f"{filename}: {doc['kind']}/{name} is defined twice"
        seen.add(key)


def test_kustomization_lists_exactly_the_files_present(objects: list[Doc]) -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    resources = kustomization.get("resources") or []
    assert len(resources) == len(set(resources)), "kustomization.yaml lists a file twice"
    assert set(resources) == {p.name for p in _manifest_files()}, (
        "kustomization.yaml's resources must be exactly the YAML files of deploy/k8s"
    )
    (namespace,) = _of_kind(objects, "Namespace")
    assert kustomization.get("namespace") == namespace


# --- kubeconform: every resource against its schema (deploy/validate) ------------------------


@pytest.fixture(scope="module")
def tools() -> toolchain.Toolchain:
    """kubeconform and the schemas, fetched by the project when missing (make validate does it first)."""
    return toolchain.ensure()


def test_kubeconform_accepts_every_resource_strictly(tools: toolchain.Toolchain, objects: list[Doc]) -> None:
    report = checks.kubeconform(tools)
    problems = [f"{r.filename}: {r.kind}/{r.name}: {r.status}: {r.message}" for r in report.problems()]
    assert report.ok, "\n".join(problems) or report.stderr
    validated = {(r.kind, r.name) for r in report.valid()}
    declared = {(doc["kind"], doc["metadata"]["name"]) for doc in objects}
    assert validated == declared, "kubeconform must have validated every resource of deploy/k8s, no more"
    custom = {doc["kind"] for doc in objects if "." in doc["apiVersion"].split("/")[0]}
    assert {"Kafka", "KafkaTopic", "Elasticsearch", "Cluster", "ObjectStore", "FlinkDeployment"} <= custom


# Broken on purpose, one mistake each: kubeconform must call every one invalid.
BROKEN = {
    "deployment-type": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  replicas: "two"
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec: {containers: [{name: c, image: "x:1"}]}
""",
    "deployment-unknown-field": """
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec: {containers: [{name: c, image: "x:1", envFrom: [], enviroment: []}]}
""",
    "kafkatopic": """
apiVersion: kafka.strimzi.io/v1beta2
kind: KafkaTopic
metadata: {name: broken, labels: {strimzi.io/cluster: xrides}}
spec: {partitions: "three", replicas: 3}
""",
    "cnpg-cluster": """
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: broken}
spec: {instances: 3, storage: {size: 1Gi}, backups: {}}
""",
    "objectstore-retention": """
apiVersion: barmancloud.cnpg.io/v1
kind: ObjectStore
metadata: {name: broken}
spec: {retentionPolicy: "30 days", configuration: {destinationPath: "s3://b/"}}
""",
    "flink-version": """
apiVersion: flink.apache.org/v1beta1
kind: FlinkDeployment
metadata: {name: broken}
spec: {image: "x:1", flinkVersion: v9_9, serviceAccount: flink}
""",
    "elasticsearch-count": """
apiVersion: elasticsearch.k8s.elastic.co/v1
kind: Elasticsearch
metadata: {name: broken}
spec: {version: 9.2.4, nodeSets: [{name: a, count: "three"}]}
""",
    "servicemonitor-interval": """
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: broken}
spec: {selector: {}, endpoints: [{port: http, interval: 5}]}
""",
    "unknown-kind": """
apiVersion: example.com/v1
kind: Gadget
metadata: {name: broken}
""",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_kubeconform_refuses_a_broken_resource(tools: toolchain.Toolchain, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(BROKEN[name], encoding="utf-8")
    report = checks.kubeconform(tools, [path])
    assert not report.ok
    assert [r.status for r in report.resources] in (["invalid"], ["error"]), report.resources


def test_images_are_pinned_and_equal_the_compose_images(objects: list[Doc]) -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    platform_image = compose["x-platform"]["image"]
    flink_image = compose["x-flink"]["image"]
    for doc in objects:
        for container in _containers(doc):
            image = container.get("image")
            if image is None:  # ECK and Flink containers inherit the resource's image
                continue
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{_where(doc, container)}: image {image!r} is not pinned"
            module = _module_of(doc, container)
            # `flink run` needs Java, PyFlink's CLI and the cluster's lib/: the job's supervisor
            # runs in the Flink image, as compose's flink-job does
            wanted = flink_image if module and module.startswith("flink_jobs") else platform_image
            if module or "/scripts/" in " ".join(container.get("command") or []):
                assert image == wanted, f"{_where(doc, container)}: not {wanted}"
    (flink,) = _of_kind(objects, "FlinkDeployment").values()
    assert flink["spec"]["image"] == flink_image


# --- settings: every XRIDES_* variable is a real field, of the right type -----------------------


def test_xrides_variables_are_fields_of_the_process_settings(objects: list[Doc]) -> None:
    checked = 0
    for doc, container, module in _platform_containers(objects):
        package = module.split(".", 1)[0] if module else None
        classes = _settings_classes(package) if package else []
        fields = _field_names(classes) if classes else ALL_FIELDS
        owner = f"{package}.settings" if classes else "any settings dataclass"
        for name in _env(container):
            if not name.startswith(PREFIX):
                continue
            checked += 1
            field = name[len(PREFIX) :].lower()
            assert field in fields, f"{_where(doc, container)}: {name} is not a field of {owner}"
        for cls in classes:  # literal values convert to the field's type
            own = {
                n: v
                for n, v in _literal_env(container).items()
                if n[len(PREFIX) :].lower() in _field_names([cls])
            }
            load_settings(cls, own)
    assert checked > 20, "expected the platform's containers to set XRIDES_* variables"


def test_secrets_are_referenced_and_hold_only_placeholders(objects: list[Doc]) -> None:
    secrets = _of_kind(objects, "Secret")
    for name, secret in secrets.items():
        values = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
        assert values, f"Secret {name} is empty"
        for key, value in values.items():
            if key not in NOT_SECRET_KEYS:
                assert value == PLACEHOLDER, f"Secret {name} key {key}: commit a placeholder, never a value"
    referenced = 0
    for doc in objects:
        for container in _containers(doc):
            for item in _env(container).values():
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if ref is None:
                    continue
                referenced += 1
                secret_name, key = ref["name"], ref["key"]
                if secret_name in GENERATED_SECRETS:
                    assert key in GENERATED_SECRETS[secret_name], (
                        f"{_where(doc, container)}: {secret_name}.{key}"
                    )
                    continue
                assert secret_name in secrets, f"{_where(doc, container)}: no Secret {secret_name}"
                stored = {
                    **(secrets[secret_name].get("stringData") or {}),
                    **(secrets[secret_name].get("data") or {}),
                }
                assert key in stored, f"{_where(doc, container)}: Secret {secret_name} has no key {key}"
            for name, item in _env(container).items():
                if any(word in name for word in ("SECRET", "PASSWORD", "KEY_HASHES", "ACCESS_KEY")):
                    assert "value" not in item, f"{_where(doc, container)}: {name} is inlined, not a secret"
    assert referenced > 0


# --- the registry's processes: module, port, probes, Service, scrape ----------------------------


def _workload(objects: list[Doc], process: PlatformProcess) -> tuple[Doc, Doc]:
    """(resource, main container) running a registered process."""
    for kind in ("Deployment", "FlinkDeployment"):
        found = _of_kind(objects, kind)
        if process.name in found:
            doc = found[process.name]
            wanted = "flink-main-container" if kind == "FlinkDeployment" else process.name
            for pod in _pod_specs(doc):
                for container in pod.get("containers") or []:
                    if container.get("name") == wanted:
                        return doc, container
    raise AssertionError(
        f"platform process {process.name!r} has no Deployment or FlinkDeployment in deploy/k8s"
    )


def _port_number(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"container {container.get('name')!r} has no port named {port!r}")


def _port_field(cls: type[Any], port: int) -> str:
    defaults = cls()
    names = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name.endswith("port") and getattr(defaults, f.name) == port
    ]
    assert len(names) == 1, f"{cls.__name__}: expected one *port field defaulting to {port}, got {names}"
    return names[0]


def _effective(doc: Doc, container: Doc, process: PlatformProcess) -> tuple[Any, str, str]:
    """(settings the container runs with, the port field, the host field) of a registered process."""
    classes = _settings_classes(process.module.split(".", 1)[0])
    assert len(classes) == 1, f"{process.module}: expected one settings dataclass"
    cls = classes[0]
    env = _literal_env(container)
    if doc["kind"] == "FlinkDeployment":  # the job's variables may sit in any template of the resource
        for other in _containers(doc):
            if other.get("name") == "flink-main-container":
                env = {**_literal_env(other), **env}
    port_field = _port_field(cls, process.port)
    host_field = port_field.replace("port", "host")
    if host_field not in _field_names([cls]):
        host_field = "metrics_host"
    return load_settings(cls, env), port_field, host_field


def _cluster_argv(process: PlatformProcess) -> list[str]:
    """Module and arguments of a process as the launcher's cluster profile runs it, which is what
    Kubernetes runs too: the Flink job's supervisor (``submit``) instead of a mini cluster."""
    cluster = {p.name: p for p in platform_processes(Topology("cluster"))}
    same = cluster.get(process.name) or cluster[f"{process.name}-1"]  # api -> api-1 (two behind HAProxy)
    return list(same.argv[same.argv.index("-m") + 1 :])


@pytest.mark.parametrize("process", REGISTRY, ids=lambda p: p.name)
def test_registered_process_runs_its_module_on_its_port(objects: list[Doc], process: PlatformProcess) -> None:
    doc, container = _workload(objects, process)
    rest = _cluster_argv(process)
    if doc["kind"] == "FlinkDeployment":
        assert doc["spec"]["job"]["args"] == ["-pym", *rest], (
            "the job's entry point differs from the registry's"
        )
        assert doc["spec"]["job"]["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    else:
        assert container["command"] == ["python", "-m", *rest], (
            f"{process.name}: command differs from the registry"
        )
    ports = {int(p["containerPort"]) for p in container.get("ports") or []}
    assert process.port in ports, f"{process.name}: container ports {sorted(ports)} lack {process.port}"
    settings, port_field, host_field = _effective(doc, container, process)
    assert getattr(settings, port_field) == process.port, (
        f"{process.name}: {port_field} is not {process.port}"
    )
    assert getattr(settings, host_field) == "0.0.0.0", (
        f"{process.name}: {host_field} must listen on all interfaces"
    )


@pytest.mark.parametrize("process", REGISTRY, ids=lambda p: p.name)
def test_registered_process_probes_use_its_health_endpoint(
    objects: list[Doc], process: PlatformProcess
) -> None:
    doc, container = _workload(objects, process)
    health_path = urlsplit(process.health_url).path
    probes = {kind: container.get(kind) for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    if doc["kind"] == "FlinkDeployment":
        # The operator owns the Flink pods' lifecycle; a probe, if any, must still be the registry's.
        probes = {kind: probe for kind, probe in probes.items() if probe}
    else:
        assert probes["livenessProbe"] and probes["readinessProbe"], f"{process.name}: needs both probes"
    for kind, probe in probes.items():
        if not probe:
            continue
        get = probe.get("httpGet")
        assert get, f"{process.name}: {kind} is not an HTTP probe"
        assert _port_number(container, get["port"]) == process.port, f"{process.name}: {kind} port"
        allowed = {health_path, "/readyz"} if kind == "readinessProbe" else {health_path}
        assert get["path"] in allowed, f"{process.name}: {kind} path {get['path']} (registry: {health_path})"


@pytest.mark.parametrize("process", REGISTRY, ids=lambda p: p.name)
def test_registered_process_is_scraped_under_its_name(objects: list[Doc], process: PlatformProcess) -> None:
    service = _one(objects, "Service", process.name)
    monitor = _one(objects, "ServiceMonitor", process.name)
    selector = monitor["spec"]["selector"]["matchLabels"]
    labels = service["metadata"].get("labels") or {}
    assert selector.items() <= labels.items(), f"ServiceMonitor {process.name} does not select its Service"
    named = {p.get("name"): p for p in service["spec"]["ports"]}
    _, container = _workload(objects, process)
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in named, f"ServiceMonitor {process.name}: no Service port {endpoint['port']}"
        target = named[endpoint["port"]].get("targetPort", named[endpoint["port"]]["port"])
        assert _port_number(container, target) == process.port, f"Service {process.name} targets another port"
        assert endpoint.get("path", "/metrics") == "/metrics"


def test_every_platform_container_port_is_a_port_setting(objects: list[Doc]) -> None:
    """Unregistered processes too (the archiver): a declared port is what the process listens on."""
    for doc, container, module in _platform_containers(objects):
        if module is None or not container.get("ports"):
            continue
        classes = _settings_classes(module.split(".", 1)[0])
        if not classes:
            continue
        settings = load_settings(classes[0], _literal_env(container))
        listening = {
            getattr(settings, f.name) for f in dataclasses.fields(classes[0]) if f.name.endswith("port")
        }
        for port in container["ports"]:
            if port.get("name") == "prom":  # Flink's own Prometheus reporter
                continue
            assert int(port["containerPort"]) in listening, (
                f"{_where(doc, container)}: port {port} is no setting"
            )


# --- Kafka: topics and durability ---------------------------------------------------------------


def _code_topics() -> dict[str, Topic]:
    """Topic name -> its registry entry; every topic a settings class names is in the registry."""
    api, persister, stream, indexer = ApiSettings(), PersisterSettings(), StreamSettings(), IndexerSettings()
    topics = {topic.name: topic for topic in TOPICS}
    named = (
        api.rides_topic,
        api.requests_topic,
        persister.rides_topic,
        persister.dlq_topic,
        stream.rides_topic,
        stream.actions_topic,
        stream.es_dlq_topic,
        stream.logs_topic,
        indexer.actions_topic,
        indexer.es_dlq_topic,
    )
    for name in named:
        assert name in topics, f"topic {name} is used by the code but not in the registry"
    return topics


def test_kafka_topics_file_is_the_registry_rendered() -> None:
    assert (REPO / "deploy/k8s/kafka-topics.yaml").read_text(encoding="utf-8") == kafka_topics_yaml(), (
        "deploy/k8s/kafka-topics.yaml is out of date: run `python -m deploy.render`"
    )


def _kafka_topics(objects: list[Doc]) -> dict[str, Doc]:
    return {doc["spec"].get("topicName", name): doc for name, doc in _of_kind(objects, "KafkaTopic").items()}


def test_kafka_topics_are_the_codes_replicated(objects: list[Doc]) -> None:
    kafka_name = next(iter(_of_kind(objects, "Kafka")))
    declared = _kafka_topics(objects)
    code = _code_topics()
    assert set(declared) == set(code), f"KafkaTopics {sorted(declared)} differ from the code's {sorted(code)}"
    pools = _of_kind(objects, "KafkaNodePool").values()
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert brokers == CLUSTER_BROKERS, "the topics are rendered for the brokers the manifests run"
    for name, doc in declared.items():
        spec = doc["spec"]
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == kafka_name
        topic = code[name]
        replication, min_insync = topic.replication_on(brokers)
        assert spec["partitions"] == topic.partitions_on(brokers), (
            f"{name}: partitions differ from the registry"
        )
        assert spec["replicas"] == replication == 3, f"{name}: replication factor 3"
        assert int(spec["config"]["min.insync.replicas"]) == min_insync == 2, (
            f"{name}: acks=all must survive one lost replica"
        )
        assert int(spec["config"]["retention.ms"]) == topic.retention_ms, f"{name}: retention"


def test_kafka_cluster_refuses_unsafe_writes(objects: list[Doc]) -> None:
    (kafka,) = _of_kind(objects, "Kafka").values()
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert config["unclean.leader.election.enable"] is False
    assert int(config["min.insync.replicas"]) == 2
    assert int(config["default.replication.factor"]) == 3
    pools = _of_kind(objects, "KafkaNodePool").values()
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert controllers == 3, "a KRaft quorum of three controllers"
    assert brokers >= 3, "replication factor 3 needs three brokers"
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert kafka["spec"]["kafka"]["version"] == compose["x-kafka"]["image"].rsplit(":", 1)[1]


def test_consumers_scale_within_their_topics_and_wait_for_them(objects: list[Doc]) -> None:
    topics = _kafka_topics(objects)
    hpas = _of_kind(objects, "HorizontalPodAutoscaler")
    bounds = {"persister": PersisterSettings().rides_topic, "es-indexer": IndexerSettings().actions_topic}
    for deployment, topic in bounds.items():
        assert hpas[deployment]["spec"]["maxReplicas"] <= topics[topic]["spec"]["partitions"], (
            f"{deployment}: more replicas than {topic} has partitions would sit idle"
        )
    for doc in objects:
        for container in _containers(doc):
            wanted = _literal_env(container).get("WAIT_FOR_TOPICS")
            if wanted is not None:
                assert set(wanted.split(",")) <= set(topics), f"{_where(doc, container)}: unknown topics"


def test_addresses_name_the_operators_services(objects: list[Doc]) -> None:
    (kafka_name,) = _of_kind(objects, "Kafka")
    listener = next(
        item
        for item in _of_kind(objects, "Kafka")[kafka_name]["spec"]["kafka"]["listeners"]
        if not item["tls"]
    )
    (es_name,) = _of_kind(objects, "Elasticsearch")
    (pg_name,) = _of_kind(objects, "Cluster")
    for doc in objects:
        for container in _containers(doc):
            env = _env(container)
            literal = _literal_env(container)
            if "XRIDES_KAFKA_BOOTSTRAP" in literal:
                assert literal["XRIDES_KAFKA_BOOTSTRAP"] == f"{kafka_name}-kafka-bootstrap:{listener['port']}"
            if "XRIDES_ES_URL" in literal:
                parts = urlsplit(literal["XRIDES_ES_URL"])
                assert (parts.hostname, parts.port) == (f"{es_name}-es-http", 9200), _where(doc, container)
                assert parts.scheme == "http", "ECK's HTTP TLS is off (the clients take no CA yet)"
            if "XRIDES_PG_DSN" in env:
                ref = env["XRIDES_PG_DSN"]["valueFrom"]["secretKeyRef"]
                # the owner's DSN only where migrations run; every process logs in as its own role
                wanted = PG_ROLE_SECRETS.get(container["name"], f"{pg_name}-app")
                assert (ref["name"], ref["key"]) == (wanted, "uri"), _where(doc, container)
            if "XRIDES_PG_REPLICA_DSN" in env:  # the same role, on the replicas
                ref = env["XRIDES_PG_REPLICA_DSN"]["valueFrom"]["secretKeyRef"]
                primary = env["XRIDES_PG_DSN"]["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == (primary["name"], "replica-uri"), _where(doc, container)


# --- the stateful services ----------------------------------------------------------------------


def _container(objects: list[Doc], kind: str, name: str, container: str) -> Doc:
    for candidate in _containers(_one(objects, kind, name)):
        if candidate["name"] == container:
            return candidate
    raise AssertionError(f"{kind}/{name} has no container {container!r}")


def test_postgres_has_two_replicas_and_backs_up_to_the_object_store(objects: list[Doc]) -> None:
    (cluster,) = _of_kind(objects, "Cluster").values()
    assert cluster["spec"]["instances"] == 3, "one primary and two replicas"
    assert "backup" not in cluster["spec"], (
        "backups through the Barman Cloud plugin, not the deprecated in-tree one"
    )
    (archiver,) = [p for p in cluster["spec"]["plugins"] if p.get("isWALArchiver")]
    store = _one(objects, "ObjectStore", archiver["parameters"]["barmanObjectName"])["spec"]
    assert store["configuration"]["destinationPath"].startswith("s3://")
    assert store["configuration"]["destinationPath"] != "s3://xrides-archive/", (
        "not in the locked ride archive"
    )
    assert re.fullmatch(r"[1-9][0-9]*[dwm]", store["retentionPolicy"])
    secrets = _of_kind(objects, "Secret")
    for ref in store["configuration"]["s3Credentials"].values():
        assert ref["key"] in secrets[ref["name"]]["stringData"], (
            f"ObjectStore: no Secret {ref['name']}.{ref['key']}"
        )
    (scheduled,) = _of_kind(objects, "ScheduledBackup").values()
    assert scheduled["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert scheduled["spec"]["method"] == "plugin"
    assert scheduled["spec"]["pluginConfiguration"]["name"] == archiver["name"]
    assert len(scheduled["spec"]["schedule"].split()) == 6, "CloudNativePG's cron has a seconds field"


def test_api_replicas_share_their_limits_and_read_the_replicas(objects: list[Doc]) -> None:
    api = _one(objects, "Deployment", "api")
    hpa = _of_kind(objects, "HorizontalPodAutoscaler")["api"]
    assert max(api["spec"]["replicas"], hpa["spec"]["maxReplicas"]) > 1
    env = _literal_env(_container(objects, "Deployment", "api", "api"))
    settings = load_settings(ApiSettings, env)
    assert settings.shared_limits == "postgres", (
        "more than one API pod: idempotency and rate limits in PostgreSQL"
    )
    assert "XRIDES_PG_REPLICA_DSN" in _env(_container(objects, "Deployment", "api", "api"))


def _es_tiers(objects: list[Doc]) -> set[str]:
    (es,) = _of_kind(objects, "Elasticsearch").values()
    roles = {role for node_set in es["spec"]["nodeSets"] for role in node_set["config"]["node.roles"]}
    return {
        role.removeprefix("data_") for role in roles if role.startswith("data_") and role != "data_content"
    }


def test_elasticsearch_retention_is_ilm_set_by_the_index_templates(objects: list[Doc]) -> None:
    assert not _of_kind(objects, "CronJob"), "retention is ILM's, set in the templates, not a script"
    env = _literal_env(_container(objects, "Deployment", "es-indexer", "es-indexer"))
    indexer = load_settings(IndexerSettings, env)
    assert indexer.es_lifecycle, "the indexer must put the ILM policies and name them in the templates"
    (es,) = _of_kind(objects, "Elasticsearch").values()
    data_nodes = sum(s["count"] for s in es["spec"]["nodeSets"] if "data_hot" in s["config"]["node.roles"])
    assert 1 <= indexer.es_replicas < data_nodes, "one replica per shard: a node lost loses no shard"
    # rides stay past the hot window the job indexes (the archiver deletes archived days earlier)
    rides = lifecycle_policy("rides")[1]["policy"]["phases"]
    assert int(rides["delete"]["min_age"].rstrip("d")) > StreamSettings().hot_days
    # every data tier the policies move indices to exists, and no tier sits unused
    phases = {phase for family in LIFECYCLE_DAYS for phase in lifecycle_policy(family)[1]["policy"]["phases"]}
    assert _es_tiers(objects) == {"hot"} | (phases & {"warm", "cold", "frozen"})
    # the platform's role reaches every index family the indexer writes, and may manage ILM
    roles = yaml.safe_load(_one(objects, "Secret", "xrides-es-roles")["stringData"]["roles.yml"])
    role = roles["xrides_platform"]
    patterns = {name for entry in role["indices"] for name in entry["names"]}
    prefixes = (
        indexer.es_rides_prefix,
        indexer.es_demand_prefix,
        indexer.es_logs_prefix,
        indexer.es_failed_prefix,
    )
    assert {f"{prefix}*" for prefix in prefixes} <= patterns
    assert "manage_ilm" in role["cluster"]
    (kibana,) = _of_kind(objects, "Kibana").values()
    assert kibana["spec"]["version"] == es["spec"]["version"]
    client_major = importlib.metadata.version("elasticsearch").split(".", 1)[0]
    assert es["spec"]["version"].split(".", 1)[0] == client_major


# What the Flink Kubernetes Operator documents for a FlinkDeployment (its CRD reference), for the
# fields the newest CRD to be had here (1.10.0) cannot vouch for under Flink 2.x.
FLINK_DEPLOYMENT_FIELDS: dict[str, set[str]] = {
    "spec": {
        "image",
        "imagePullPolicy",
        "serviceAccount",
        "flinkVersion",
        "ingress",
        "podTemplate",
        "jobManager",
        "taskManager",
        "job",
        "restartNonce",
        "flinkConfiguration",
        "logConfiguration",
        "mode",
    },
    "jobManager": {"resource", "replicas", "podTemplate"},
    "taskManager": {"resource", "replicas", "podTemplate"},
    "resource": {"cpu", "memory", "ephemeralStorage"},
}


def test_flink_deployment_uses_only_the_operators_documented_fields(objects: list[Doc]) -> None:
    (flink,) = _of_kind(objects, "FlinkDeployment").values()
    spec = flink["spec"]
    assert set(spec) <= FLINK_DEPLOYMENT_FIELDS["spec"], set(spec) - FLINK_DEPLOYMENT_FIELDS["spec"]
    for role in ("jobManager", "taskManager"):
        assert set(spec[role]) <= FLINK_DEPLOYMENT_FIELDS[role], role
        assert set(spec[role]["resource"]) <= FLINK_DEPLOYMENT_FIELDS["resource"], role
        assert isinstance(spec[role]["replicas"], int)
    assert spec.get("mode", "native") in ("native", "standalone")
    assert re.fullmatch(r"v\d+_\d+", spec["flinkVersion"])
    assert all(isinstance(v, str) for v in spec["flinkConfiguration"].values()), (
        "configuration values are strings"
    )
    (main,) = spec["podTemplate"]["spec"]["containers"]
    assert main["name"] == "flink-main-container", "the operator merges only this container into its own"


def _flink_client_config(objects: list[Doc]) -> dict[str, Any]:
    return dict(yaml.safe_load(_one(objects, "ConfigMap", "flink-client")["data"]["config.yaml"]))


def test_flink_session_cluster_and_supervisor_restore_from_s3(objects: list[Doc]) -> None:
    (flink,) = _of_kind(objects, "FlinkDeployment").values()
    spec = flink["spec"]
    version = importlib.metadata.version("apache-flink")
    major, minor = version.split(".")[:2]
    assert spec["flinkVersion"] == f"v{major}_{minor}"
    assert spec["image"].endswith(f":{version}")
    assert "job" not in spec, "a session cluster: the supervisor submits the job (flink_jobs/submit.py)"
    conf = spec["flinkConfiguration"]
    assert conf["high-availability.type"] == "kubernetes"
    assert conf["high-availability.storageDir"].startswith("s3://")
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == "RETAIN_ON_CANCELLATION"
    assert "PrometheusReporterFactory" in conf["metrics.reporter.prom.factory.class"], (
        "the cluster's reporter"
    )

    supervisor = _one(objects, "Deployment", "flink-job")
    assert supervisor["spec"]["replicas"] == 1 and supervisor["spec"]["strategy"]["type"] == "Recreate"
    settings = load_settings(
        StreamSettings, _literal_env(_container(objects, "Deployment", "flink-job", "flink-job"))
    )
    assert on_cluster(settings), "the job must know it runs on a cluster (no mini cluster, no reporter jar)"
    # the job's checkpoints land below the cluster's directory, on S3, where the supervisor lists them
    assert checkpoint_uri(settings).startswith(conf["execution.checkpointing.dir"].rstrip("/") + "/")
    rest = urlsplit(settings.flink_rest_url)
    assert rest.hostname == f"{flink['metadata']['name']}-rest", "the operator's REST Service"
    assert rest.port == int(conf.get("rest.port", 8081))
    client = _flink_client_config(objects)
    assert (client["rest.address"], int(client["rest.port"])) == (rest.hostname, rest.port)
    assert settings.flink_conf_dir in {
        m["mountPath"] for m in _container(objects, "Deployment", "flink-job", "flink-job")["volumeMounts"]
    }
    # parallelism: all TaskManagers' slots hold it, and so do the slots left when one is lost
    slots = int(conf["taskmanager.numberOfTaskSlots"])
    taskmanagers = spec["taskManager"]["replicas"]
    assert settings.flink_parallelism == int(conf["parallelism.default"])
    assert settings.flink_parallelism <= (taskmanagers - 1) * slots
    # Flink's own metrics: the PodMonitor selects the operator's pods of this deployment
    (pod_monitor,) = _of_kind(objects, "PodMonitor").values()
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {"app": flink["metadata"]["name"]}
    (main,) = spec["podTemplate"]["spec"]["containers"]
    assert "prom" in {p["name"] for p in main["ports"]}


def test_flink_client_config_equals_compose_but_for_the_address(objects: list[Doc]) -> None:
    k8s = _flink_client_config(objects)
    compose = yaml.safe_load(COMPOSE_FLINK_CLIENT.read_text(encoding="utf-8"))
    assert {k: v for k, v in k8s.items() if k != "rest.address"} == {
        k: v for k, v in compose.items() if k != "rest.address"
    }
    log4j = _one(objects, "ConfigMap", "flink-client")["data"]["log4j-cli.properties"]
    assert log4j == (COMPOSE_FLINK_CLIENT.parent / "log4j-cli.properties").read_text(encoding="utf-8")


def test_flink_image_carries_the_s3_plugin_the_cluster_profile_runs() -> None:
    text = FLINK_DOCKERFILE.read_text(encoding="utf-8")
    assert f"{S3_PLUGIN.group}:{S3_PLUGIN.artifact}:{S3_PLUGIN.version}" in text
    assert "/opt/flink/plugins/" in text


# --- Prometheus ---------------------------------------------------------------------------------


def test_prometheus_rules_equal_the_rule_files(objects: list[Doc]) -> None:
    rules = _of_kind(objects, "PrometheusRule")
    files = sorted(RULES.glob("*.yml"))
    assert files
    by_source = {r["metadata"]["annotations"]["xrides.io/source"]: r for r in rules.values()}
    assert set(by_source) == {f"dashboards/prometheus/rules/{f.name}" for f in files}, (
        "one PrometheusRule per rule file (annotation xrides.io/source)"
    )
    for path in files:
        groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        assert by_source[f"dashboards/prometheus/rules/{path.name}"]["spec"]["groups"] == groups, (
            f"PrometheusRule for {path.name} differs from the file: copy its groups into monitoring.yaml"
        )
