"""deploy/k8s agrees with the platform it deploys (no cluster needed).

The manifests cannot be applied here, so they are checked against the sources of truth instead:
the launcher's registry of platform processes (``deploy/stack/platform.py``), each process's
settings dataclass, the topics the code uses, the Prometheus rule files, and the versions that
docker-compose.yml and the installed clients pin. ``kubectl kustomize`` also runs when kubectl
exists. docs/architecture.md explains the design the manifests describe.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from deploy.render import kafka_topics_yaml
from deploy.stack.platform import REGISTRY, PlatformProcess
from flink_jobs.settings import StreamSettings
from indexer.settings import IndexerSettings
from ingest_service.settings import ApiSettings
from persister.settings import PersisterSettings
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
}
# Packages whose settings the XRIDES_* variables of a container are checked against.
SETTINGS_PACKAGES = ("ingest_service", "persister", "flink_jobs", "query_dsl", "archiver")

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


def test_kubectl_kustomize_builds_the_folder(objects: list[Doc]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(built) == len(objects)
    assert all(doc["metadata"].get("namespace") == "xrides" for doc in built if doc["kind"] != "Namespace")


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
            if _module_of(doc, container) or "/scripts/" in " ".join(container.get("command") or []):
                assert image == platform_image, f"{_where(doc, container)}: not the platform image"
    flink = _one(objects, "FlinkDeployment", "flink-job")["spec"]
    assert flink["image"] == flink_image


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


@pytest.mark.parametrize("process", REGISTRY, ids=lambda p: p.name)
def test_registered_process_runs_its_module_on_its_port(objects: list[Doc], process: PlatformProcess) -> None:
    doc, container = _workload(objects, process)
    rest = list(process.argv[process.argv.index("-m") + 1 :])  # module and its arguments
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
    for name, doc in declared.items():
        spec = doc["spec"]
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == kafka_name
        topic = code[name]
        assert spec["partitions"] == topic.partitions_on(3), f"{name}: partitions differ from the registry"
        assert spec["replicas"] == 3, f"{name}: replication factor 3"
        assert int(spec["config"]["min.insync.replicas"]) == 2, (
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


# --- the stateful services ----------------------------------------------------------------------


def test_postgres_has_two_replicas_and_elasticsearch_hot_and_warm(objects: list[Doc]) -> None:
    (cluster,) = _of_kind(objects, "Cluster").values()
    assert cluster["spec"]["instances"] == 3, "one primary and two replicas"
    (es,) = _of_kind(objects, "Elasticsearch").values()
    roles = {tuple(s["config"]["node.roles"]) for s in es["spec"]["nodeSets"]}
    assert any("data_hot" in r for r in roles) and any("data_warm" in r for r in roles)
    (kibana,) = _of_kind(objects, "Kibana").values()
    assert kibana["spec"]["version"] == es["spec"]["version"]
    client_major = importlib.metadata.version("elasticsearch").split(".", 1)[0]
    assert es["spec"]["version"].split(".", 1)[0] == client_major


def test_lifecycle_keeps_elasticsearch_a_day_past_the_hot_window(objects: list[Doc]) -> None:
    config = _one(objects, "ConfigMap", "xrides-es-lifecycle")["data"]
    policy = yaml.safe_load(config["policy.json"])["policy"]["phases"]
    delete_days = int(policy["delete"]["min_age"].rstrip("d"))
    assert delete_days == StreamSettings().hot_days + 1
    assert "forcemerge" not in policy["warm"]["actions"], "warm indices must stay writable for late updates"
    settings = yaml.safe_load(config["index-settings.json"])
    assert settings["index.lifecycle.parse_origination_date"] is True


def test_flink_matches_the_installed_pyflink(objects: list[Doc]) -> None:
    spec = _one(objects, "FlinkDeployment", "flink-job")["spec"]
    version = importlib.metadata.version("apache-flink")
    major, minor = version.split(".")[:2]
    assert spec["flinkVersion"] == f"v{major}_{minor}"
    assert spec["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{version}.jar"
    assert spec["image"].endswith(f":{version}")
    assert spec["flinkConfiguration"]["execution.checkpointing.dir"].startswith("s3://")


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
