"""docker-compose.yml agrees with the platform it deploys (no Docker engine needed).

The file cannot be run here, so it is checked against the sources of truth instead: the launcher's
registry of platform processes (``deploy/stack/platform.py``), each process's settings dataclass,
the topic registry, the installed client libraries, and the Prometheus config it mounts. The real
tools run too, installed by the project when missing: ``docker-compose config`` (built from its Go
module by deploy/validate) and ``promtool check config`` (Debian's prometheus, as ``make up``).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import pytest
import yaml

from deploy.render import CLUSTER_BROKERS, compose_topic_args
from deploy.stack import envfile
from deploy.stack import settings as stack_settings
from deploy.stack.artifacts import ensure_debian_package
from deploy.stack.platform import REGISTRY, PlatformProcess
from deploy.validate import checks, toolchain
from flink_jobs.rides_job import checkpoint_uri, on_cluster
from flink_jobs.settings import StreamSettings
from indexer.settings import IndexerSettings
from ingest_service.settings import ApiSettings
from xrides.settings import load_settings
from xrides.topics import BY_NAME

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
FLINK_POM = REPO / "deploy" / "compose" / "flink" / "pom.xml"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, $NAME; "$$" is a literal "$".
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
# Variables whose address must name a service of the file, and the port a scheme implies.
_URL_VARIABLES = (
    "XRIDES_PG_DSN",
    "XRIDES_ES_URL",
    "XRIDES_S3_ENDPOINT",
    "XRIDES_PROMETHEUS_URL",
    "XRIDES_API_URL",
)
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "http": 80, "https": 443}
_DEPENDENCY_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# --- loading and interpolation ---------------------------------------------------------------


def _variables(text: str) -> Iterator[re.Match[str]]:
    return (m for m in _INTERPOLATION.finditer(text) if m.group(0) != "$$")


def _interpolate(value: Any) -> Any:
    """Compose's interpolation as ``docker compose up`` without a .env does it: defaults only."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            if match.group("op") in (":-", "-"):
                return match.group("arg") or ""
            return ""

        return _INTERPOLATION.sub(replace, value)
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    return value


@pytest.fixture(scope="module")
def raw_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(raw_text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(raw_text)
    assert isinstance(loaded, dict), "docker-compose.yml must be a mapping"
    interpolated = _interpolate(loaded)
    assert isinstance(interpolated, dict)
    return interpolated


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict)
    assert found, "no services"
    assert all(isinstance(spec, dict) for spec in found.values())
    return found


# --- small readers of a service's spec ------------------------------------------------------


def _environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        pairs = [str(item).split("=", 1) for item in env]
        return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _command(spec: dict[str, Any]) -> list[str]:
    command = spec.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _module_of(argv: list[str]) -> str | None:
    """The module run with ``-m``, as ``PlatformProcess.module`` reads it."""
    if "-m" in argv and argv.index("-m") + 1 < len(argv):
        return argv[argv.index("-m") + 1]
    return None


def _port_mappings(spec: dict[str, Any]) -> list[tuple[int | None, int]]:
    """(published host port or None, container port) for every ``ports`` entry."""
    out: list[tuple[int | None, int]] = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            out.append((int(published) if published is not None else None, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        container = int(parts[-1])
        out.append((int(parts[-2]) if len(parts) >= 2 else None, container))
    return out


def _container_ports(spec: dict[str, Any]) -> set[int]:
    exposed = {int(str(port).split("/")[0]) for port in spec.get("expose") or []}
    return exposed | {container for _, container in _port_mappings(spec)}


def _dependencies(spec: dict[str, Any]) -> dict[str, str]:
    depends = spec.get("depends_on") or {}
    if isinstance(depends, list):
        return {str(name): "service_started" for name in depends}
    return {
        str(name): str((cond or {}).get("condition", "service_started")) for name, cond in depends.items()
    }


def _volume_mounts(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every short-syntax or long-syntax volume."""
    mounts: list[tuple[str, str]] = []
    for entry in spec.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            parts = str(entry).split(":")
            mounts.append((parts[0], parts[1]))
    return mounts


def _is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _runs_platform_code(spec: dict[str, Any]) -> bool:
    """Built from the repository's root Dockerfile: a process of the platform itself."""
    build = spec.get("build")
    if build is None:
        return False
    if isinstance(build, str):
        return Path(build).resolve() == REPO
    return (REPO / build.get("context", ".")).resolve() == REPO and build.get("dockerfile", "Dockerfile") in (
        "Dockerfile",
        "./Dockerfile",
    )


def _service_of(services: dict[str, dict[str, Any]], process: PlatformProcess) -> dict[str, Any]:
    assert process.name in services, (
        f"platform process {process.name!r} (deploy/stack/platform.py) has no service in docker-compose.yml"
    )
    return services[process.name]


def _split_address(value: str) -> SplitResult:
    return urlsplit(value if "://" in value else f"//{value}")


def _settings_fields(module: str) -> set[str] | None:
    """Fields of the settings dataclass(es) in ``<package>.settings``; None when it does not exist yet."""
    package = module.split(".", maxsplit=1)[0]
    try:
        settings_module = importlib.import_module(f"{package}.settings")
    except ModuleNotFoundError as exc:
        if exc.name in (package, f"{package}.settings"):
            return None
        raise
    fields: set[str] = set()
    for _, cls in inspect.getmembers(settings_module, inspect.isclass):
        defined_here = cls.__module__ == settings_module.__name__
        if defined_here and dataclasses.is_dataclass(cls) and cls.__name__.endswith("Settings"):
            fields |= {field.name for field in dataclasses.fields(cls)}
    return fields or None


def _image_tag(image: str) -> tuple[str, str | None]:
    """(repository, tag) of an image reference; a digest counts as a pin."""
    if "@sha256:" in image:
        return image.split("@", 1)[0], "sha256"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return image, None
    repository, tag = image.rsplit(":", 1)
    return repository, tag


def _assert_pinned(image: str, where: str) -> None:
    _, tag = _image_tag(image)
    assert tag is not None, f"{where}: image {image!r} has no tag (pin a version)"
    assert tag != "latest", f"{where}: image {image!r} uses 'latest' (pin a version)"
    assert re.search(r"\d", tag), f"{where}: image {image!r} has a tag without a version"


def _dockerfiles(services: dict[str, dict[str, Any]]) -> set[Path]:
    found: set[Path] = set()
    for spec in services.values():
        build = spec.get("build")
        if build is None:
            continue
        context = REPO / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        found.add((context / dockerfile).resolve())
    return found


def _from_lines(dockerfile: Path) -> list[tuple[str, str | None]]:
    """(image, stage name) of every FROM instruction."""
    out: list[tuple[str, str | None]] = []
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            out.append((match.group(1), match.group(2)))
    return out


def _image_of(services: dict[str, dict[str, Any]], name: str) -> str:
    image = services[name].get("image")
    assert isinstance(image, str), f"service {name!r} has no image"
    return image


# --- the file as a whole ---------------------------------------------------------------------


def test_compose_parses_with_valid_service_names(services: dict[str, dict[str, Any]]) -> None:
    for name in services:
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name), (
            f"service name {name!r} is not a valid compose name"
        )


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in services.items():
        assert spec.get("image") or spec.get("build"), f"service {name!r} has neither image nor build"


def test_image_tags_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in services.items():
        if "image" in spec:
            _assert_pinned(str(spec["image"]), f"service {name!r}")


def test_dockerfile_base_images_are_pinned_and_the_final_stage_is_not_root(
    services: dict[str, dict[str, Any]],
) -> None:
    dockerfiles = _dockerfiles(services)
    assert REPO / "Dockerfile" in dockerfiles
    for dockerfile in dockerfiles:
        assert dockerfile.is_file(), f"{dockerfile} is named in docker-compose.yml but does not exist"
        stages: set[str] = set()
        for image, stage in _from_lines(dockerfile):
            if image not in stages:
                _assert_pinned(image, str(dockerfile.relative_to(REPO)))
            if stage:
                stages.add(stage)
        text = dockerfile.read_text(encoding="utf-8")
        final_stage = text[text.rfind("\nFROM ") :]
        users = re.findall(r"^USER\s+(\S+)", final_stage, re.MULTILINE)
        assert users, f"{dockerfile.relative_to(REPO)}: the final stage sets no USER (runs as root)"
        assert users[-1] not in ("root", "0"), f"{dockerfile.relative_to(REPO)}: the final stage runs as root"


def test_platform_image_installs_from_the_lock() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "requirements.lock" in text
    assert "pip install --no-deps ." in text


def test_depends_on_names_existing_services_with_fitting_conditions(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, spec in services.items():
        for dependency, condition in _dependencies(spec).items():
            assert dependency in services, f"{name!r} depends on {dependency!r}, which is not a service"
            assert condition in _DEPENDENCY_CONDITIONS, (
                f"{name!r} -> {dependency!r}: unknown condition {condition!r}"
            )
            target = services[dependency]
            if condition == "service_healthy":
                assert "healthcheck" in target, (
                    f"{name!r} waits for {dependency!r} to be healthy; it has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert str(target.get("restart", "no")) == "no", (
                    f"{name!r} waits for one-shot {dependency!r} to complete; it must not restart"
                )
            # A service that always runs cannot wait for one that only runs under a profile.
            assert spec.get("profiles") or not target.get("profiles"), (
                f"{name!r} runs by default but depends on {dependency!r}, which is behind a profile"
            )


def test_stateful_services_have_healthchecks_and_declared_named_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set((compose.get("volumes") or {}).keys())
    for name, spec in services.items():
        named = [source for source, _ in _volume_mounts(spec) if source and not _is_bind(source)]
        for volume in named:
            assert volume in declared, f"{name!r} mounts volume {volume!r}, not declared under volumes:"
        if named and str(spec.get("restart", "no")) != "no":
            assert "healthcheck" in spec, f"stateful service {name!r} has no healthcheck"


def test_bind_mounts_exist_except_what_dashboards_will_hold(services: dict[str, dict[str, Any]]) -> None:
    # dashboards/ is filled by the observability work; Docker creates a missing directory.
    for name, spec in services.items():
        for source, _ in _volume_mounts(spec):
            if not _is_bind(source):
                continue
            path = (REPO / source).resolve()
            if path.is_relative_to(REPO / "dashboards"):
                continue
            assert path.exists(), f"{name!r} bind-mounts {source}, which does not exist"


# --- the platform's processes ------------------------------------------------------------------


def test_every_registered_process_has_a_service_running_its_module(
    services: dict[str, dict[str, Any]],
) -> None:
    assert REGISTRY, "the platform registry is empty"
    for process in REGISTRY:
        spec = _service_of(services, process)
        command = _command(spec)
        assert _module_of(command) == process.module, (
            f"service {process.name!r} runs {command}, the registry runs -m {process.module}"
        )
        assert not spec.get("profiles"), (
            f"service {process.name!r} is behind profiles {spec['profiles']}: the launcher runs it, so compose "
            "must run it by default (remove the profile)"
        )
        # The Flink job's client runs in the Flink image, which carries the same project code.
        flink_image = (spec.get("build") or {}).get("dockerfile") == "deploy/compose/flink/Dockerfile"
        assert _runs_platform_code(spec) or flink_image, (
            f"service {process.name!r} must be built from the repository's Dockerfile"
        )


def test_every_registered_process_has_its_health_check(services: dict[str, dict[str, Any]]) -> None:
    for process in REGISTRY:
        test = _service_of(services, process).get("healthcheck", {}).get("test")
        assert isinstance(test, list), f"service {process.name!r} has no exec-form healthcheck"
        assert test[0] == "CMD", test
        assert _module_of(test[1:]) == process.module, test
        assert "--check" in test, (
            f"{process.name!r}: the healthcheck should be `python -m {process.module} --check`"
        )


def test_platform_ports_equal_the_registry_and_the_settings(services: dict[str, dict[str, Any]]) -> None:
    for process in REGISTRY:
        spec = _service_of(services, process)
        assert process.port in _container_ports(spec), f"{process.name!r} does not expose {process.port}"
        published = {host for host, container in _port_mappings(spec) if container == process.port}
        assert published == {process.port}, (
            f"{process.name!r}: port {process.port} must be published on the same host port as the local stack"
        )
        env = _environment(spec)
        if "XRIDES_METRICS_PORT" in env:
            assert int(env["XRIDES_METRICS_PORT"]) == process.port
    api = _service_of(services, next(p for p in REGISTRY if p.module == "ingest_service"))
    env = _environment(api)
    assert ApiSettings().api_port == int(env.get("XRIDES_API_PORT", ApiSettings().api_port))
    assert ApiSettings().api_port in _container_ports(api)
    assert env.get("XRIDES_API_HOST") == "0.0.0.0", "in a container the API must listen on every interface"


def test_platform_env_names_are_settings_of_the_process(services: dict[str, dict[str, Any]]) -> None:
    checked_api = False
    for name, spec in services.items():
        env = _environment(spec)
        module = _module_of(_command(spec))
        if not _runs_platform_code(spec):
            # the Flink image's job supervisor reads its settings too; engines read none
            if module is None:
                assert not [v for v in env if v.startswith("XRIDES_")], (
                    f"{name!r} runs no process that reads XRIDES_*"
                )
                continue
            env = {k: v for k, v in env.items() if k.startswith("XRIDES_")}
        assert module, f"platform service {name!r} should run `python -m <module>`"
        for variable in env:
            assert variable.startswith("XRIDES_"), f"{name!r}: {variable} is not an XRIDES_* setting"
        fields = _settings_fields(module)
        assert fields is not None, (
            f"{name!r}: {module} has no settings dataclass to check its variables against"
        )
        if module == "ingest_service":
            assert fields == {f.name for f in dataclasses.fields(ApiSettings)}
            checked_api = True
        for variable in env:
            field = variable.removeprefix("XRIDES_").lower()
            assert field in fields, (
                f"{name!r}: {variable} is not a field of {module}.settings ({sorted(fields)})"
            )
    assert checked_api


def test_addresses_point_at_services_and_their_ports(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in services.items():
        env = _environment(spec)
        if "XRIDES_KAFKA_BOOTSTRAP" in env:
            for address in env["XRIDES_KAFKA_BOOTSTRAP"].split(","):
                parsed = _split_address(address.strip())
                host, port = parsed.hostname, parsed.port
                assert host in services, f"{name!r}: Kafka address {address} is not a service"
                assert port in _container_ports(services[host]), f"{name!r}: {host} does not listen on {port}"
                advertised = _environment(services[host]).get("KAFKA_ADVERTISED_LISTENERS", "")
                assert f"://{host}:{port}" in advertised, f"{host} does not advertise {host}:{port}"
        for variable in _URL_VARIABLES:
            if variable not in env:
                continue
            parsed = urlsplit(env[variable])
            host = parsed.hostname
            port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
            assert host in services, f"{name!r}: {variable} points at {host!r}, not a service"
            assert port in _container_ports(services[host]), (
                f"{name!r}: {variable}: {host} does not listen on {port}"
            )


def test_credentials_agree_with_the_services_that_own_them(services: dict[str, dict[str, Any]]) -> None:
    pg = _environment(services["postgres"])
    minio = _environment(services["minio"])
    es_setup = _environment(services["es-setup"])
    bucket = _environment(services["minio-setup"])["ARCHIVE_BUCKET"]
    migrate = _environment(services["migrate"])
    role_passwords = {f"xrides_{r}": migrate[f"XRIDES_PG_{r.upper()}_PASSWORD"] for r in envfile.PG_ROLES}
    assert bucket == stack_settings.S3_BUCKET
    for name, spec in services.items():
        env = _environment(spec)
        if "XRIDES_PG_DSN" in env:
            dsn = urlsplit(env["XRIDES_PG_DSN"])
            user = dsn.username or ""
            wanted = pg["POSTGRES_PASSWORD"] if user == pg["POSTGRES_USER"] else role_passwords.get(user)
            assert (unquote(dsn.password or ""), dsn.path.lstrip("/")) == (wanted, pg["POSTGRES_DB"]), (
                f"{name!r}: XRIDES_PG_DSN does not match the postgres service or a role migrate creates"
            )
        if "XRIDES_ES_URL" in env:
            url = urlsplit(env["XRIDES_ES_URL"])
            assert (url.username, unquote(url.password or "")) == (
                es_setup["PLATFORM_USER"],
                es_setup["PLATFORM_PASSWORD"],
            ), f"{name!r}: XRIDES_ES_URL's credentials are not the user es-setup creates"
        if "XRIDES_S3_ACCESS_KEY" in env:
            assert env["XRIDES_S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"], name
            assert env["XRIDES_S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"], name
        if "XRIDES_S3_BUCKET" in env:
            assert env["XRIDES_S3_BUCKET"] == bucket, name


# --- Kafka -------------------------------------------------------------------------------------


def _brokers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        name: _environment(spec) for name, spec in services.items() if "KAFKA_NODE_ID" in _environment(spec)
    }


def test_topics_one_shot_creates_the_platform_topics_replicated(services: dict[str, dict[str, Any]]) -> None:
    assert _command(services["topics"]) == compose_topic_args(), (
        "the compose topics differ from the registry: `python -m deploy.render --compose-topics`"
    )
    topics = services["topics"]
    script = [source for source, target in _volume_mounts(topics) if target in " ".join(topics["entrypoint"])]
    assert script, "the topics entrypoint script is not mounted"
    assert (REPO / script[0]).is_file()

    brokers = _brokers(services)
    assert len(brokers) == CLUSTER_BROKERS, "the topics are rendered for the brokers the file runs"
    specs = [arg.split(":") for arg in _command(topics)]
    assert {spec[0] for spec in specs} == set(BY_NAME), "every registry topic, rides.es and rides.es-dlq too"
    for name, _partitions, _retention, replication, min_isr in specs:
        assert (int(replication), int(min_isr)) == BY_NAME[name].replication_on(len(brokers)), name
        # acks=all is only worth something when a write needs more than the leader
        assert 1 < int(min_isr) < int(replication) <= len(brokers), name
    for name, broker in brokers.items():
        assert int(broker["KAFKA_MIN_INSYNC_REPLICAS"]) == 2, name
        assert int(broker["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == len(brokers), name
        assert int(broker["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == len(brokers), name
        assert broker["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name
        voters = {
            voter.split("@")[1].split(":")[0] for voter in broker["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        }
        assert voters == set(brokers), f"{name}: the KRaft quorum must list every broker"
    assert len({broker["KAFKA_NODE_ID"] for broker in brokers.values()}) == len(brokers), "duplicate node ids"
    assert len({broker["CLUSTER_ID"] for broker in brokers.values()}) == 1, (
        "brokers of one cluster share CLUSTER_ID"
    )


def test_create_topics_script_creates_what_the_registry_says(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The one-shot's script itself, run with a stand-in for kafka-topics.sh that records its calls."""
    calls = tmp_path / "calls"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n', encoding="utf-8")
    stub.chmod(0o755)
    topics = services["topics"]
    (script,) = [
        source for source, target in _volume_mounts(topics) if target in " ".join(topics["entrypoint"])
    ]
    env = {"PATH": os.environ["PATH"], "KAFKA_TOPICS_CMD": str(stub), "BOOTSTRAP_SERVERS": "kafka-1:9092"}
    result = subprocess.run(
        ["bash", str(REPO / script), *_command(topics)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    created = {}
    for line in calls.read_text(encoding="utf-8").splitlines():
        if "--create" in line:
            args = line.split()
            created[args[args.index("--topic") + 1]] = args
    assert set(created) == set(BY_NAME)
    for name, args in created.items():
        replication, min_isr = BY_NAME[name].replication_on(CLUSTER_BROKERS)
        assert args[args.index("--replication-factor") + 1] == str(replication), name
        assert f"min.insync.replicas={min_isr}" in args, name
        assert args[args.index("--partitions") + 1] == str(BY_NAME[name].partitions_on(CLUSTER_BROKERS)), name
    bad = subprocess.run(
        ["bash", str(REPO / script), "rides:12:604800000:2:3"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2, "min.insync.replicas above the replication must be refused"


# --- Prometheus and Grafana --------------------------------------------------------------------


def _mounted_file(spec: dict[str, Any], target: str) -> Path:
    for source, mount_target in _volume_mounts(spec):
        if mount_target == target:
            return (REPO / source).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def test_prometheus_scrapes_every_platform_process_and_flink(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    config = yaml.safe_load(
        _mounted_file(prometheus, "/etc/prometheus/prometheus.yml").read_text(encoding="utf-8")
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    def static_targets(job: dict[str, Any]) -> set[str]:
        return {target for group in job.get("static_configs", []) for target in group["targets"]}

    for process in REGISTRY:
        assert process.name in jobs, (
            f"Prometheus has no job {process.name!r} (job names equal the registry's)"
        )
        assert f"{process.name}:{process.port}" in static_targets(jobs[process.name])

    flink_port = 9249
    properties = _environment(services["jobmanager"])["FLINK_PROPERTIES"]
    assert f"metrics.reporter.prom.port: {flink_port}" in properties
    assert "PrometheusReporterFactory" in properties
    dns = list(jobs["flink"]["dns_sd_configs"])
    assert {name for sd in dns for name in sd["names"]} == {"jobmanager", "taskmanager"}
    assert all(sd["port"] == flink_port for sd in dns)
    for service in ("jobmanager", "taskmanager"):
        assert flink_port in _container_ports(services[service])

    rules_dir = _mounted_file(prometheus, "/etc/prometheus/rules")
    assert rules_dir == REPO / "dashboards" / "prometheus" / "rules"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards_folder(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    datasources = yaml.safe_load(
        _mounted_file(grafana, "/etc/grafana/provisioning/datasources/datasources.yml").read_text(
            encoding="utf-8"
        )
    )
    (prometheus,) = [ds for ds in datasources["datasources"] if ds["type"] == "prometheus"]
    url = urlsplit(prometheus["url"])
    assert url.hostname in services
    assert url.port in _container_ports(services[str(url.hostname)])

    providers = yaml.safe_load(
        _mounted_file(grafana, "/etc/grafana/provisioning/dashboards/dashboards.yml").read_text(
            encoding="utf-8"
        )
    )
    paths = {provider["options"]["path"] for provider in providers["providers"]}
    mounted = {
        target for source, target in _volume_mounts(grafana) if source.rstrip("/") == "./dashboards/grafana"
    }
    assert paths == mounted, "Grafana's dashboard provider must read the mounted dashboards/grafana folder"


# --- versions that must agree ------------------------------------------------------------------


def test_elasticsearch_and_kibana_versions_match_each_other_and_the_client(
    services: dict[str, dict[str, Any]],
) -> None:
    es_repo, es_tag = _image_tag(_image_of(services, "elasticsearch"))
    kibana_repo, kibana_tag = _image_tag(_image_of(services, "kibana"))
    assert es_repo.endswith("/elasticsearch") and kibana_repo.endswith("/kibana")
    assert es_tag == kibana_tag, "Elasticsearch and Kibana must run the same version"
    client_major = importlib.metadata.version("elasticsearch").split(".")[0]
    assert str(es_tag).split(".")[0] == client_major, (
        f"the Python client is {client_major}.x, the server {es_tag}"
    )
    for service in ("elasticsearch", "es-setup"):
        assert _image_of(services, service) == _image_of(services, "elasticsearch")


def test_elasticsearch_security_is_on(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["elasticsearch"])
    assert env["xpack.security.enabled"] == "true"
    assert env["ELASTIC_PASSWORD"]
    kibana = _environment(services["kibana"])
    assert kibana["ELASTICSEARCH_USERNAME"] == "kibana_system"
    assert kibana["ELASTICSEARCH_PASSWORD"] == _environment(services["es-setup"])["KIBANA_SYSTEM_PASSWORD"]
    assert len(kibana["XPACK_ENCRYPTEDSAVEDOBJECTS_ENCRYPTIONKEY"]) >= 32


def test_flink_image_matches_pyflink_and_the_connector(services: dict[str, dict[str, Any]]) -> None:
    pyflink = importlib.metadata.version("apache-flink")
    flink_dockerfiles = [path for path in _dockerfiles(services) if path != REPO / "Dockerfile"]
    assert len(flink_dockerfiles) == 1
    bases = [image for image, _ in _from_lines(flink_dockerfiles[0]) if image.startswith("flink:")]
    assert len(bases) == 1
    _, tag = _image_tag(bases[0])
    assert str(tag).split("-")[0] == pyflink, (
        f"the Flink image is {tag}, apache-flink in the venv is {pyflink}"
    )

    root = ET.parse(FLINK_POM).getroot()
    minor = ".".join(pyflink.split(".")[:2])
    connectors = {
        str(dependency.findtext("artifactId")): str(dependency.findtext("version"))
        for dependency in root.iterfind("dependencies/dependency")
        if "connector" in str(dependency.findtext("artifactId"))
    }
    assert "flink-sql-connector-kafka" in connectors, "the Flink image needs the Kafka connector"
    for artifact, version in connectors.items():
        assert version.endswith(f"-{minor}"), f"{artifact} {version} is not built for Flink {minor}"
    for service in ("jobmanager", "taskmanager", "flink-job"):
        assert services[service]["image"] == services["jobmanager"]["image"]


def test_each_process_logs_in_to_postgres_with_its_own_role(services: dict[str, dict[str, Any]]) -> None:
    """The same roles as the local stack's launcher gives (deploy/stack/envfile.py); only
    ``migrate`` holds the owner's DSN."""
    for name, spec in services.items():
        dsn = _environment(spec).get("XRIDES_PG_DSN")
        if dsn is None:
            continue
        command = list(spec.get("command") or [])
        module = command[command.index("-m") + 1] if "-m" in command else name
        expected = "xrides" if name == "migrate" else f"xrides_{envfile.PROCESS_PG_ROLES.get(module)}"
        assert urlsplit(dsn).username == expected, name


# --- secrets and interpolation -----------------------------------------------------------------


def test_every_variable_has_a_default_and_is_documented_in_env_example(raw_text: str) -> None:
    used: dict[str, str] = {}
    for match in _variables(raw_text):
        name = match.group("braced") or match.group("bare")
        assert match.group("op") == ":-", (
            f"${{{name}}} needs a default (${{{name}:-...}}) so `up` works without .env"
        )
        default = match.group("arg")
        assert used.setdefault(name, default) == default, f"${{{name}}} has two different defaults"
    documented = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            documented[key.strip()] = value.strip()
    assert documented == used, (
        ".env.example must list every variable docker-compose.yml reads, with its default"
    )


# --- Flink, Elasticsearch: what the processes need from the engines -------------------------------


def _flink_properties(services: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return dict(yaml.safe_load(_environment(services[name])["FLINK_PROPERTIES"]))


def test_flink_job_is_supervised_and_restores_from_s3(services: dict[str, dict[str, Any]]) -> None:
    conf = _flink_properties(services, "jobmanager")
    assert conf == _flink_properties(services, "taskmanager"), "one configuration for the whole cluster"
    job = services["flink-job"]
    assert _command(job) == ["python", "-m", "flink_jobs", "submit"], (
        "the supervisor, as in the cluster profile"
    )
    settings = load_settings(
        StreamSettings, {k: v for k, v in _environment(job).items() if k.startswith("XRIDES_")}
    )
    assert on_cluster(settings)
    # checkpoints on S3 (MinIO) below the cluster's own directory, in a bucket minio-setup creates
    assert checkpoint_uri(settings).startswith(str(conf["execution.checkpointing.dir"]).rstrip("/") + "/")
    bucket = str(conf["execution.checkpointing.dir"]).removeprefix("s3://").split("/", 1)[0]
    assert _environment(services["minio-setup"])["FLINK_BUCKET"] == bucket
    endpoint = urlsplit(str(conf["s3.endpoint"]))
    assert endpoint.hostname == urlsplit(settings.s3_endpoint).hostname == "minio"
    assert endpoint.port in _container_ports(services["minio"])
    assert (conf["s3.access-key"], conf["s3.secret-key"]) == (settings.s3_access_key, settings.s3_secret_key)
    # the supervisor and `flink run` both reach the JobManager's REST port
    rest = urlsplit(settings.flink_rest_url)
    assert (rest.hostname, rest.port) == (conf["rest.address"], conf["rest.port"])
    assert rest.port in _container_ports(services["jobmanager"])
    client_dir = _mounted_file(job, settings.flink_conf_dir)
    client = yaml.safe_load((client_dir / "config.yaml").read_text(encoding="utf-8"))
    assert (client["rest.address"], client["rest.port"]) == (rest.hostname, rest.port)
    assert (client_dir / "log4j-cli.properties").is_file()
    assert settings.flink_parallelism <= int(conf["taskmanager.numberOfTaskSlots"]), (
        "one TaskManager holds it"
    )
    assert "PrometheusReporterFactory" in conf["metrics.reporter.prom.factory.class"], (
        "the cluster's reporter"
    )


def test_indexer_puts_lifecycle_policies_and_fitting_replicas(services: dict[str, dict[str, Any]]) -> None:
    env = {k: v for k, v in _environment(services["es-indexer"]).items() if k.startswith("XRIDES_")}
    indexer = load_settings(IndexerSettings, env)
    assert _environment(services["elasticsearch"])["discovery.type"] == "single-node"
    assert indexer.es_replicas == 0, "one node: a replica could never be assigned (the cluster stays yellow)"
    assert indexer.es_lifecycle, "the official image has ILM: the templates' policies own retention"
    script = (REPO / "deploy" / "compose" / "elasticsearch" / "es-setup.sh").read_text(encoding="utf-8")
    role = json.loads(script.split("/_security/role/xrides_platform '", 1)[1].split("'", 1)[0])
    patterns = {name for entry in role["indices"] for name in entry["names"]}
    prefixes = (
        indexer.es_rides_prefix,
        indexer.es_demand_prefix,
        indexer.es_logs_prefix,
        indexer.es_failed_prefix,
    )
    assert {f"{prefix}*" for prefix in prefixes} <= patterns, (
        "the platform's role must reach every index family"
    )
    assert "manage_ilm" in role["cluster"]


def test_every_long_running_platform_service_is_scraped(services: dict[str, dict[str, Any]]) -> None:
    """Registered or not (the query service): a platform process that listens is a Prometheus job."""
    config = yaml.safe_load((REPO / "deploy" / "compose" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: {t for group in job.get("static_configs", []) for t in group["targets"]}
        for job in config["scrape_configs"]
    }
    for name, spec in services.items():
        if _runs_platform_code(spec) and str(spec.get("restart", "")) != "no" and spec.get("expose"):
            (port,) = [int(p) for p in spec["expose"]]
            assert f"{name}:{port}" in targets.get(name, set()), f"Prometheus does not scrape {name}:{port}"


# --- the real tools, installed by the project when missing ----------------------------------------


@pytest.fixture(scope="module")
def tools() -> toolchain.Toolchain:
    """docker-compose built from its Go module (make validate does it first; here only if missing)."""
    return toolchain.ensure()


def test_docker_compose_config_accepts_the_file(
    tools: toolchain.Toolchain, services: dict[str, dict[str, Any]]
) -> None:
    # `docker-compose config` parses, interpolates and validates client-side; no engine is needed.
    for profiles in ((), checks.compose_profiles()):
        report = checks.compose_config(tools, profiles=profiles)
        assert report.ok, report.output
    assert set(report.services) == set(services), "with every profile, every service of the file"


BROKEN_COMPOSE = {
    "unknown-key": "services:\n  a:\n    image: busybox:1.36\n    restartt: always\n",
    "wrong-type": "services:\n  a:\n    image: busybox:1.36\n    ports: 8080\n",
    "missing-dependency": "services:\n  a:\n    image: busybox:1.36\n    depends_on: [b]\n",
    "undeclared-volume": "services:\n  a:\n    image: busybox:1.36\n    volumes: ['data:/data']\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN_COMPOSE))
def test_docker_compose_config_refuses_a_broken_file(
    tools: toolchain.Toolchain, tmp_path: Path, name: str
) -> None:
    path = tmp_path / "compose.yml"
    path.write_text(BROKEN_COMPOSE[name], encoding="utf-8")
    report = checks.compose_config(tools, compose_file=path)
    assert not report.ok, f"{name}: docker-compose config accepted it"


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = Path(stack_settings.PROMTOOL_BIN)
    ensure_debian_package(promtool, stack_settings.PROMETHEUS_PACKAGE)  # what `make up` installs
    config = REPO / "deploy" / "compose" / "prometheus.yml"
    result = subprocess.run(
        [str(promtool), "check", "config", "--syntax-only", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
