"""Fast tests of the stack launcher's pure parts (no service is started)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy.stack import configs, envfile, jvm, services, settings
from deploy.stack.artifacts import MavenArtifact, extract_zip, mvn_error_tail, render_pom
from deploy.stack.commands import select
from deploy.stack.errors import StackError
from deploy.stack.jvm import parse_major
from deploy.stack.kafkawire import metadata_request, parse_metadata
from deploy.stack.layout import Context, resolve_layout
from deploy.stack.platform import REGISTRY, PlatformProcess, platform_processes
from deploy.stack.preflight import ensure_disk_space, ensure_ports_free, port_owner, port_taken
from deploy.stack.processes import (
    LaunchSpec,
    group_members,
    is_stale,
    live_pid,
    process_start_ticks,
    processes_in_dir,
    read_pid_file,
    rss_kib,
    start,
    stop,
    write_pid_file,
)
from deploy.stack.s3signing import sign_headers
from deploy.stack.topics import wanted_topics
from deploy.stack.topology import Topology, resolve_topology
from xrides.topics import RIDES, TOPICS

EXPECTED_VARIABLES = [
    "XRIDES_PROFILE",
    "XRIDES_KAFKA_BOOTSTRAP",
    "XRIDES_LOG_KAFKA_BOOTSTRAP",
    "XRIDES_PG_DSN",
    "XRIDES_ES_URL",
    "XRIDES_S3_ENDPOINT",
    "XRIDES_S3_ACCESS_KEY",
    "XRIDES_S3_SECRET_KEY",
    "XRIDES_S3_BUCKET",
    "XRIDES_PROMETHEUS_URL",
    "XRIDES_API_URL",
    "XRIDES_API_KEY",
    "XRIDES_QUERY_URL",
    "XRIDES_HEALTH_PEERS",
    "XRIDES_FLINK_METRICS_PORT",
    "XRIDES_PG_WRITER_DSN",
    "XRIDES_PG_WRITER_PASSWORD",
    "XRIDES_PG_READER_DSN",
    "XRIDES_PG_READER_PASSWORD",
    "XRIDES_PG_ARCHIVER_DSN",
    "XRIDES_PG_ARCHIVER_PASSWORD",
]
PG_PASSWORDS = {"writer": "w-pw", "reader": "r-pw", "archiver": "a-pw"}


# --- env file -------------------------------------------------------------------------------


def test_env_file_has_exactly_the_platform_variables() -> None:
    variables = envfile.stack_variables("k3y", PG_PASSWORDS)
    assert list(variables) == EXPECTED_VARIABLES
    assert variables["XRIDES_KAFKA_BOOTSTRAP"] == "127.0.0.1:19092"
    assert variables["XRIDES_PG_DSN"] == "postgresql://xrides:xrides@127.0.0.1:15432/xrides"
    assert variables["XRIDES_ES_URL"] == "http://127.0.0.1:19200"
    assert variables["XRIDES_S3_ENDPOINT"] == "http://127.0.0.1:19000"
    assert variables["XRIDES_S3_ACCESS_KEY"] == "xrides"
    assert variables["XRIDES_S3_SECRET_KEY"] == "xrides-secret"
    assert variables["XRIDES_S3_BUCKET"] == "xrides-archive"
    assert variables["XRIDES_PROMETHEUS_URL"] == "http://127.0.0.1:19090"
    assert variables["XRIDES_API_URL"] == "http://127.0.0.1:8000"
    assert variables["XRIDES_API_KEY"] == "k3y"
    assert variables["XRIDES_PG_WRITER_DSN"] == "postgresql://xrides_writer:w-pw@127.0.0.1:15432/xrides"
    assert variables["XRIDES_PG_READER_PASSWORD"] == "r-pw"


def test_env_file_renders_export_lines_that_round_trip() -> None:
    variables = envfile.stack_variables("a key with 'quotes' & spaces", PG_PASSWORDS)
    text = envfile.render(variables)
    assert all(line.startswith("export XRIDES_") for line in text.splitlines())
    assert "export XRIDES_KAFKA_BOOTSTRAP=127.0.0.1:19092\n" in text
    assert envfile.parse(text) == variables


def test_env_file_is_valid_shell(tmp_path: Path) -> None:
    path = tmp_path / "env"
    envfile.write(path, envfile.stack_variables("x-y_z", PG_PASSWORDS))
    out = subprocess.run(
        ["sh", "-c", f'. "{path}" && printf %s "$XRIDES_PG_DSN|$XRIDES_API_KEY"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "postgresql://xrides:xrides@127.0.0.1:15432/xrides|x-y_z"


def test_env_file_write_reports_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "env"
    assert envfile.write(path, {"A": "1"}) is True
    assert envfile.write(path, {"A": "1"}) is False
    assert envfile.write(path, {"A": "2"}) is True


def test_api_key_is_generated_once_and_stays_stable(tmp_path: Path) -> None:
    key_file = tmp_path / "api-dev-key"
    first = envfile.ensure_api_key(key_file)
    assert len(first) >= 32
    assert envfile.ensure_api_key(key_file) == first
    assert key_file.stat().st_mode & 0o077 == 0


def test_pg_role_passwords_are_generated_once_and_stay_stable(tmp_path: Path) -> None:
    path = tmp_path / "pg-role-passwords"
    first = envfile.ensure_pg_passwords(path)
    assert set(first) == {"writer", "reader", "archiver"}
    assert len(set(first.values())) == 3 and all(len(p) >= 24 for p in first.values())
    assert envfile.ensure_pg_passwords(path) == first
    assert path.stat().st_mode & 0o077 == 0


def test_each_platform_process_gets_only_its_own_postgres_role() -> None:
    env = {"PATH": "/bin", **envfile.stack_variables("k3y", PG_PASSWORDS)}
    persister = envfile.process_env("persister", env)
    assert persister["XRIDES_PG_DSN"] == env["XRIDES_PG_WRITER_DSN"]
    assert envfile.process_env("ingest_service", env)["XRIDES_PG_DSN"] == env["XRIDES_PG_READER_DSN"]
    assert envfile.process_env("archiver", env)["XRIDES_PG_DSN"] == env["XRIDES_PG_ARCHIVER_DSN"]
    for proc in REGISTRY:
        child = envfile.process_env(proc.module, env, dict(proc.env))
        others = {v for k, v in child.items() if k.startswith("XRIDES_PG_") and k != "XRIDES_PG_DSN"}
        assert not others, proc.name
        assert "xrides:xrides@" not in child.get("XRIDES_PG_DSN", ""), proc.name
        assert child["XRIDES_API_KEY"] == "k3y" and child["PATH"] == "/bin"
    assert "XRIDES_PG_DSN" not in envfile.process_env("flink_jobs", env)
    assert set(envfile.PROCESS_PG_ROLES) <= {p.module for p in REGISTRY}


def test_cluster_env_gives_readers_the_replica_and_each_api_its_port() -> None:
    cluster = Topology("cluster")
    env = {"PATH": "/bin", **envfile.stack_variables("k3y", PG_PASSWORDS, cluster, Path("/s"))}
    assert env["XRIDES_PROFILE"] == "cluster"
    assert env["XRIDES_KAFKA_BOOTSTRAP"].count(",") == 2 and env["XRIDES_ES_URL"].count(",") == 2
    assert env["XRIDES_SHARED_LIMITS"] == "postgres" and env["XRIDES_ES_REPLICAS"] == "1"
    assert env["XRIDES_FLINK_STATE_DIR"].startswith("s3://")
    assert env["XRIDES_FLINK_CONF_DIR"] == "/s/flink-jobmanager/conf"
    procs = {p.name: p for p in platform_processes(cluster)}
    assert {"api-1", "api-2"} <= set(procs) and "api" not in procs
    ports = {dict(procs[name].env)["XRIDES_API_PORT"] for name in ("api-1", "api-2")}
    assert ports == {str(cluster.api_backend_port(1)), str(cluster.api_backend_port(2))}
    assert cluster.api_port not in {cluster.api_backend_port(1), cluster.api_backend_port(2)}
    api = envfile.process_env("ingest_service", env, dict(procs["api-1"].env))
    assert api["XRIDES_PG_REPLICA_DSN"].endswith(f":{cluster.pg_replica_port}/xrides")
    assert "xrides_reader" in api["XRIDES_PG_REPLICA_DSN"]
    assert "XRIDES_PG_REPLICA_DSN" not in envfile.process_env("persister", env)
    assert procs["flink-job"].argv[-1] == "submit"
    single = {p.name: p for p in platform_processes(Topology())}
    assert single["flink-job"].argv[-1] == "job" and "api" in single
    assert "XRIDES_PG_REPLICA_DSN" not in envfile.stack_variables("k3y", PG_PASSWORDS)


def test_port_offset_moves_every_port_and_profiles_are_checked() -> None:
    base, moved = Topology("cluster"), Topology("cluster", 1000)
    assert moved.api_port == base.api_port + 1000
    assert moved.kafka_bootstrap.split(",")[2].endswith(str(base.kafka_port(3) + 1000))
    assert moved.flink_rest_port == base.flink_rest_port + 1000
    assert moved.metrics_port("persister") == base.metrics_port("persister") + 1000
    assert resolve_topology({"XRIDES_PROFILE": "cluster", "XRIDES_PORT_OFFSET": "1000"}, None) == moved
    assert resolve_topology({}, "cluster").profile == "cluster"
    assert resolve_topology({}, None).profile == "single"
    with pytest.raises(StackError, match="XRIDES_PROFILE"):
        resolve_topology({"XRIDES_PROFILE": "k8s"}, None)
    with pytest.raises(StackError, match="XRIDES_PORT_OFFSET"):
        resolve_topology({"XRIDES_PORT_OFFSET": "ten"}, None)


def test_cluster_configs_name_every_voter_seed_and_backend(tmp_path: Path) -> None:
    cluster = Topology("cluster")
    props = configs.kafka_server_properties(tmp_path, cluster, 2)
    assert "node.id=2\n" in props
    assert props.count("@127.0.0.1:") == 3
    assert "min.insync.replicas=2\n" in props and "default.replication.factor=3\n" in props
    yml = configs.elasticsearch_yml(tmp_path, tmp_path, cluster, 3, bootstrap=True)
    assert '"xrides-1", "xrides-2", "xrides-3"' in yml and "single-node" not in yml
    assert "initial_master_nodes" not in configs.elasticsearch_yml(
        tmp_path, tmp_path, cluster, 3, bootstrap=False
    )
    haproxy = configs.haproxy_cfg("127.0.0.1", 8000, [("api-1", 8001), ("api-2", 8002)])
    assert "server api-1 127.0.0.1:8001 check" in haproxy and "server api-2 127.0.0.1:8002 check" in haproxy
    assert "bind 127.0.0.1:8000" in haproxy and "uri /healthz" in haproxy


# --- ports ----------------------------------------------------------------------------------


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_port_taken_detects_a_listener_and_its_release() -> None:
    sock = _listening_socket()
    port = sock.getsockname()[1]
    try:
        assert port_taken(port) is True
    finally:
        sock.close()
    assert port_taken(port) is False


def test_port_owner_names_this_process() -> None:
    sock = _listening_socket()
    try:
        owner = port_owner(sock.getsockname()[1])
    finally:
        sock.close()
    assert owner.pid == os.getpid()


def test_ensure_ports_free_names_service_port_and_owner() -> None:
    sock = _listening_socket()
    port = sock.getsockname()[1]
    try:
        with pytest.raises(StackError) as info:
            ensure_ports_free("kafka", (port,))
    finally:
        sock.close()
    message = str(info.value)
    assert message.startswith(f"kafka: port {port} is already taken by pid {os.getpid()}")
    assert "\n" not in message
    ensure_ports_free("kafka", (port,))  # free again: no error


# --- pid files ------------------------------------------------------------------------------


def test_pid_file_of_a_live_process_is_not_stale(tmp_path: Path) -> None:
    pid_file = tmp_path / "self.pid"
    write_pid_file(pid_file, os.getpid())
    assert live_pid(pid_file) == os.getpid()
    assert is_stale(pid_file) is False


def test_pid_file_of_an_exited_process_is_stale(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    pid_file = tmp_path / "gone.pid"
    write_pid_file(pid_file, proc.pid)
    proc.wait()
    assert live_pid(pid_file) is None
    assert is_stale(pid_file) is True


def test_pid_file_with_reused_pid_is_stale(tmp_path: Path) -> None:
    """Same pid, different start time: the pid now belongs to someone else."""
    pid_file = tmp_path / "reused.pid"
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None
    pid_file.write_text(f"{os.getpid()} {ticks + 12345}\n", encoding="ascii")
    assert live_pid(pid_file) is None
    assert is_stale(pid_file) is True


def test_garbled_or_missing_pid_file(tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.pid"
    garbled.write_text("not a pid\n", encoding="ascii")
    assert read_pid_file(garbled) is None
    assert is_stale(garbled) is True
    missing = tmp_path / "missing.pid"
    assert is_stale(missing) is False
    assert live_pid(missing) is None


def test_start_detaches_and_stop_ends_the_whole_group(tmp_path: Path) -> None:
    """A started process gets its own session; stop() ends it and the children it spawned."""
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); print('RE' + 'ADY', flush=True); time.sleep(60)"
    spec = LaunchSpec(argv=[sys.executable, "-c", script], env=dict(os.environ), cwd=tmp_path)
    log, pid_file = tmp_path / "logs" / "demo.log", tmp_path / "run" / "demo.pid"
    proc = start(spec, log, pid_file)
    try:
        assert live_pid(pid_file) == proc.pid
        assert os.getsid(proc.pid) == proc.pid  # own session, survives the launching shell
        deadline = time.monotonic() + 10
        while "READY" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "READY" in log.read_text()
        # SIGTERM ends the leader; the 'sleep' child ignores it and is SIGKILLed with the group.
        assert stop(pid_file, timeout=1) == proc.pid
        proc.wait(timeout=5)
        assert not pid_file.exists()
        assert group_members(proc.pid) == []  # zombies awaiting init's reaping do not count
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "===== [stack]" in log.read_text()


def test_processes_in_dir_finds_children_outside_the_group(tmp_path: Path) -> None:
    """How PostgreSQL backends (which setsid()) are found: by their working directory."""
    proc = subprocess.Popen(["sleep", "30"], cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while proc.pid not in processes_in_dir(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_in_dir(tmp_path) == [proc.pid]
        assert rss_kib([proc.pid]) > 0
    finally:
        proc.kill()
        proc.wait()
    assert processes_in_dir(tmp_path) == []


# --- layout, selection, misc ----------------------------------------------------------------


def test_stack_dir_defaults_to_repo_and_honours_override(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert resolve_layout({}, repo).root == repo / ".stack"
    other = tmp_path / "elsewhere"
    layout = resolve_layout({"XRIDES_STACK_DIR": str(other)}, repo)
    assert layout.root == other.resolve()
    assert layout.log_file("kafka") == other.resolve() / "logs" / "kafka.log"


def test_only_selection_splits_services_and_platform(tmp_path: Path) -> None:
    ctx = Context(resolve_layout({}, tmp_path))
    services, platform = select(ctx, ["postgres", "kafka", "api"])
    assert services == {"postgres", "kafka"}
    assert platform == {"api"}
    with pytest.raises(StackError, match="unknown part"):
        select(ctx, ["postgress"])
    cluster = Context(resolve_layout({}, tmp_path), topology=Topology("cluster"))
    services, platform = select(cluster, ["kafka-2", "flink-taskmanager-1", "api-2", "haproxy"])
    assert services == {"kafka-2", "flink-taskmanager-1", "haproxy"} and platform == {"api-2"}
    with pytest.raises(StackError, match="unknown part"):
        select(cluster, ["kafka"])


def test_low_disk_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="low disk space"):
        ensure_disk_space(tmp_path, minimum=1 << 60)
    ensure_disk_space(tmp_path, minimum=1)


def test_too_old_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "jvm" / "jdk-11"
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "java").write_text("", encoding="ascii")
    (old / "release").write_text('JAVA_VERSION="11.0.22"\n', encoding="ascii")
    monkeypatch.setattr(jvm, "JVM_ROOT", tmp_path / "jvm")
    with pytest.raises(StackError) as info:
        jvm.find_jdk("elasticsearch", 21, {"PATH": str(tmp_path)}, ("ES_JAVA_HOME",))
    assert str(info.value).startswith("elasticsearch needs Java 21+, found ")
    assert "(Java 11)" in str(info.value)
    assert jvm.find_jdk("kafka", 11, {"PATH": str(tmp_path)}).major == 11


def test_java_version_parsing() -> None:
    assert parse_major('"17.0.15"') == 17
    assert parse_major("25") == 25
    assert parse_major("1.8.0_392") == 8
    assert parse_major("garbage") is None


def test_rides_partitions_come_from_the_environment() -> None:
    assert [(t.name, t.partitions, t.replication) for t in wanted_topics({})] == [
        (topic.name, topic.partitions, 1) for topic in TOPICS
    ]
    assert wanted_topics({"XRIDES_RIDES_PARTITIONS": "12"})[0].partitions == 12
    on_three = {t.name: t for t in wanted_topics({}, brokers=3)}
    assert on_three["rides.es"].replication == 3
    assert dict(on_three["rides.es"].config)["min.insync.replicas"] == "2"
    assert on_three["rides"].partitions == RIDES.cluster_partitions
    with pytest.raises(StackError, match="XRIDES_RIDES_PARTITIONS"):
        wanted_topics({"XRIDES_RIDES_PARTITIONS": "zero"})


def test_platform_process_runs_only_when_its_module_exists(tmp_path: Path) -> None:
    proc = PlatformProcess(
        "api", (".venv/bin/python", "-m", "ingest_service"), "http://x/healthz", "127.0.0.1:8000"
    )
    assert proc.module_present(tmp_path) is False
    (tmp_path / "ingest_service").mkdir()
    (tmp_path / "ingest_service" / "__main__.py").write_text("", encoding="utf-8")
    assert proc.module_present(tmp_path) is True
    assert proc.resolved_argv(tmp_path) == [str(tmp_path / ".venv/bin/python"), "-m", "ingest_service"]
    assert proc.port == 8000
    assert {p.name for p in REGISTRY} >= {"api", "persister"}


def test_maven_error_tail_keeps_the_cause_only() -> None:
    output = (
        "\x1b[1;31m[ERROR]\x1b[m Failed to execute goal: Could not find artifact a:b:jar:9 -> [Help 1]\n"
        "[ERROR] \n[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch.\n"
        "[ERROR] Re-run Maven using the -X switch to enable full debug logging.\n"
        "[ERROR] [Help 1] http://example.invalid/help\n"
    )
    assert (
        mvn_error_tail(output)
        == "[ERROR] Failed to execute goal: Could not find artifact a:b:jar:9 -> [Help 1]"
    )


def test_pom_lists_type_and_classifier() -> None:
    fat = MavenArtifact("org.gaul", "s3proxy", "3.0.0", classifier="jar-with-dependencies")
    zipped = MavenArtifact(
        "org.elasticsearch.distribution.integ-test-zip", "elasticsearch", "9.2.4", type="zip"
    )
    pom = render_pom("demo", [fat, zipped])
    assert "<classifier>jar-with-dependencies</classifier>" in pom
    assert "<type>zip</type>" in pom
    assert fat.coordinate == "org.gaul:s3proxy:3.0.0:jar:jar-with-dependencies"
    assert zipped.coordinate == "org.elasticsearch.distribution.integ-test-zip:elasticsearch:9.2.4:zip"


def test_extract_zip_keeps_modes_and_strips_the_top_folder(tmp_path: Path) -> None:
    archive = tmp_path / "dist.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        script = zipfile.ZipInfo("dist-1.0/bin/run")
        script.external_attr = 0o755 << 16
        zf.writestr(script, "#!/bin/sh\n")
        zf.writestr("dist-1.0/config/app.yml", "a: 1\n")
    dest = extract_zip(archive, tmp_path / "install")
    assert (dest / "bin" / "run").stat().st_mode & 0o777 == 0o755
    assert (dest / "config" / "app.yml").read_text() == "a: 1\n"
    assert (dest / ".complete").exists()


# --- rendered configs -----------------------------------------------------------------------


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_kafka_properties_single_node_kraft(tmp_path: Path) -> None:
    props = _props(configs.kafka_server_properties(tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1"


def test_postgres_settings_keep_durability() -> None:
    conf = configs.postgres_conf()
    for line in ("port = 15432", "shared_buffers = 256MB", "fsync = on", "synchronous_commit = on"):
        assert line in conf
    assert "listen_addresses = '127.0.0.1'" in conf


def test_elasticsearch_yml(tmp_path: Path) -> None:
    yml = configs.elasticsearch_yml(tmp_path / "data", tmp_path / "logs")
    assert 'discovery.type: "single-node"' in yml
    assert "http.port: 19200" in yml
    assert "transport.port: 19300" in yml
    assert "xpack.security.enabled: false" in yml
    assert "cluster.routing.allocation.disk.threshold_enabled: false" in yml


def test_s3proxy_properties(tmp_path: Path) -> None:
    props = _props(configs.s3proxy_properties(tmp_path))
    assert props["s3proxy.endpoint"] == "http://127.0.0.1:19000"
    assert props["s3proxy.authorization"] == "aws-v2-or-v4"
    assert (props["s3proxy.identity"], props["s3proxy.credential"]) == ("xrides", "xrides-secret")
    assert props["jclouds.filesystem.basedir"] == str(tmp_path)
    assert props["s3proxy.ignore-unknown-headers"] == "true"


def test_prometheus_yml_lists_self_targets_and_rules() -> None:
    yml = configs.prometheus_yml([("api", "127.0.0.1:8000")], "/repo/dashboards/prometheus/rules/*.yml")
    assert "scrape_interval: 5s" in yml
    assert '      - targets: ["127.0.0.1:19090"]' in yml
    assert '  - job_name: "api"' in yml
    assert '      - targets: ["127.0.0.1:8000"]' in yml
    assert '  - "/repo/dashboards/prometheus/rules/*.yml"' in yml
    assert "rule_files" not in configs.prometheus_yml([], None)


# --- wire formats ---------------------------------------------------------------------------


def _kstr(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def test_kafka_metadata_request_and_response_parsing() -> None:
    request = metadata_request(7, all_topics=True)
    assert struct.unpack_from(">ihhi", request) == (len(request) - 4, 3, 4, 7)
    body = struct.pack(">i", 0)  # throttle
    body += struct.pack(">i", 1) + struct.pack(">i", 1) + _kstr("127.0.0.1") + struct.pack(">ih", 19092, -1)
    body += _kstr("cluster") + struct.pack(">i", 1)
    body += struct.pack(">i", 1)  # one topic
    body += struct.pack(">h", 0) + _kstr("rides") + b"\x00" + struct.pack(">i", 2)
    for index in range(2):
        body += struct.pack(">hii", 0, index, 1) + struct.pack(">ii", 1, 1) + struct.pack(">ii", 1, 1)
    view = parse_metadata(body)
    assert view.brokers == 1
    assert view.topics == {"rides": 2}


def test_sigv4_matches_the_aws_documented_example() -> None:
    """The GET Object example from the AWS SigV4 documentation."""
    headers = sign_headers(
        "GET",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        headers={"Range": "bytes=0-9"},
        now=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["Authorization"].endswith(
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert settings.S3_REGION == "us-east-1"


def test_a_niced_process_gets_its_whole_session_weighted(tmp_path: Path) -> None:
    """nice alone ranks threads inside one autogroup; the launcher weights the session too."""
    spec = LaunchSpec(argv=["sleep", "30"], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path, nice=7)
    proc = start(spec, tmp_path / "sleep.log", tmp_path / "sleep.pid")
    try:
        autogroup = Path(f"/proc/{proc.pid}/autogroup")
        if Path("/proc/self/autogroup").exists():
            assert autogroup.read_text().split()[-1] == "7"
        else:  # a kernel without autogroups: nice already ranks processes, nothing to set
            assert not autogroup.exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_kafka_cluster_id_starting_with_a_dash_is_not_taken_for_an_option() -> None:
    args = services.storage_format_args("-Zx3dQ9sTmaW1t5u8JqHwA", Path("/s/server.properties"))
    assert args == [
        "format",
        "--cluster-id=-Zx3dQ9sTmaW1t5u8JqHwA",
        "--config=/s/server.properties",
        "--ignore-formatted",
    ]
