"""One spec per stack service: how to fetch, configure, launch and health-check it.

Each service is a small class so the orchestration in ``commands`` can treat
them uniformly (start what is not healthy, wait, run post-start steps) while
the quirks stay next to the service they belong to: PostgreSQL and
Elasticsearch refuse root, Kafka needs its storage formatted once, s3proxy only
answers signed requests, Prometheus can reload its config without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path
from typing import ClassVar

from deploy.stack import configs, settings
from deploy.stack.accounts import SERVICE_USER, chown_one, chown_tree, ensure_user, run_as
from deploy.stack.artifacts import MavenArtifact, ensure_debian_package, extract_zip, fetch_maven
from deploy.stack.errors import StackError
from deploy.stack.jvm import Jdk, find_jdk
from deploy.stack.kafkawire import fetch_metadata
from deploy.stack.layout import Context
from deploy.stack.platform import platform_processes
from deploy.stack.preflight import ensure_traversable
from deploy.stack.probes import http_request
from deploy.stack.processes import LaunchSpec, group_members, live_pid, process_start_ticks, processes_in_dir
from deploy.stack.progress import say
from deploy.stack.s3signing import sign_headers
from deploy.stack.topics import ensure_topics, wanted_topics
from deploy.stack.topology import Topology

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def write_if_changed(path: Path, content: str) -> bool:
    """Write ``content`` unless the file already has it; True when written."""
    try:
        if path.read_text(encoding="utf-8") == content:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return True


def make_dir(path: Path) -> Path:
    """mkdir -p with mode 0755, so the service user can traverse it whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


class Service:
    """Base spec; subclasses set ``name`` and ``ports`` (from the stack's topology) and the hooks."""

    name: str
    ports: tuple[int, ...]
    health_timeout: ClassVar[float] = 60.0
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def topology(self) -> Topology:
        return self.ctx.topology

    @property
    def home(self) -> Path:
        """The service's own directory under the stack root."""
        return self.ctx.layout.service_dir(self.name)

    @property
    def port(self) -> int:
        """The client-facing port shown by ``status``."""
        return self.ports[0]

    def base_env(self) -> dict[str, str]:
        """A minimal, reproducible environment (the launcher's own env is not leaked)."""
        return {
            "PATH": SYSTEM_PATH,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "HOME": str(self.home),
        }

    def preflight(self) -> None:
        """Cheap checks that must pass before anything starts (binaries, Java, user)."""

    def prepare(self) -> None:
        """Fetch, install and configure; only called when the service is about to start."""

    def launch(self) -> LaunchSpec:
        """The command line of the long-lived process."""
        raise NotImplementedError

    def healthy(self) -> bool:
        """True when the service answers as it should; must be fast and never raise."""
        raise NotImplementedError

    def after_healthy(self) -> None:
        """Idempotent post-start steps (database, topics); run on every ``up``."""

    def refresh(self) -> None:
        """Apply config changes to an already running service where that is cheap."""

    def data_dirs(self) -> list[Path]:
        """What ``down --purge`` deletes (never downloads or installs)."""
        return [self.home / "data"]

    def member_pids(self, pid: int) -> list[int]:
        """Every process of a running service (for memory accounting)."""
        return group_members(pid)


class Postgres(Service):
    """PostgreSQL 15 from Debian, run as the unprivileged service user (the primary, in the cluster)."""

    health_timeout = 60.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.name = "postgres"
        self.ports = (ctx.topology.pg_port,)

    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM would wait for clients to leave
    stop_timeout = 60.0

    @property
    def bin(self) -> Path:
        """Debian's versioned binary directory."""
        return Path(settings.PG_BIN)

    @property
    def data(self) -> Path:
        """The cluster's data directory (PGDATA)."""
        return self.home / "data"

    def preflight(self) -> None:
        """Install the server package if absent; create the service user."""
        ensure_debian_package(self.bin / "postgres", settings.PG_PACKAGE)
        ensure_user()
        ensure_traversable(self.ctx.layout.root, SERVICE_USER)

    def prepare(self) -> None:
        """initdb once (superuser ``xrides`` with its password), then (re)write our settings."""
        make_dir(self.home)
        chown_one(self.home)
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        self._clear_stale_lock()
        write_if_changed(
            self.data / "xrides-stack.conf", configs.postgres_conf(self.topology.host, self.port)
        )
        main_conf = self.data / "postgresql.conf"
        include = "include_if_exists = 'xrides-stack.conf'"
        text = main_conf.read_text(encoding="utf-8")
        if include not in text:
            main_conf.write_text(text + f"\n# Added by deploy.stack\n{include}\n", encoding="utf-8")

    def _clear_stale_lock(self) -> None:
        """Remove a ``postmaster.pid`` left by a killed server whose pid is now a zombie or reused.

        A server killed after its launcher exited is reparented to init, and until
        init reaps it the pid still answers ``kill(pid, 0)``, so PostgreSQL refuses
        to start ("lock file postmaster.pid already exists"); after a reboot the pid
        may belong to an unrelated process. Backends orphaned by a killed postmaster
        exit by themselves; any that linger are killed first, so nothing can still
        be attached to the old shared memory when the lock goes.
        """
        self._end_orphaned_backends()
        lock = self.data / "postmaster.pid"
        try:
            pid = int(lock.read_text(encoding="ascii").splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            cmdline = b""
        if process_start_ticks(pid) is None or b"postgres" not in cmdline:
            lock.unlink(missing_ok=True)

    def _end_orphaned_backends(self, grace: float = 3.0) -> None:
        """Wait for (then SIGKILL) backends of a dead postmaster; they run with cwd = data dir."""
        deadline = time.monotonic() + grace
        while (orphans := processes_in_dir(self.data)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while processes_in_dir(self.data) and time.monotonic() < deadline + 5:
            time.sleep(0.1)

    def member_pids(self, pid: int) -> list[int]:
        """The postmaster plus its backends (which live in their own sessions)."""
        return sorted({pid, *processes_in_dir(self.data)})

    def _initdb(self) -> None:
        if self.data.exists():
            shutil.rmtree(self.data)  # a half-initialised cluster from an interrupted run
        say("postgres: initialising cluster")
        pwfile = self.home / ".pwfile"
        pwfile.write_text(settings.PG_PASSWORD + "\n", encoding="utf-8")
        chown_one(pwfile)
        try:
            result = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    settings.PG_USER,
                    f"--pwfile={pwfile}",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                cwd=self.home,
                env=self.base_env(),
                user=run_as(),
                group=run_as(),
                extra_groups=[] if run_as() else None,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(
                f"postgres: initdb failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}"
            )

    def launch(self) -> LaunchSpec:
        """The postmaster itself (not pg_ctl), so its pid is the one we track."""
        return LaunchSpec(
            argv=[str(self.bin / "postgres"), "-D", str(self.data)],
            env=self.base_env(),
            cwd=self.home,
            user=run_as(),
        )

    def healthy(self) -> bool:
        """pg_isready over TCP: accepting connections, not just listening."""
        try:
            result = subprocess.run(
                [
                    str(self.bin / "pg_isready"),
                    "-q",
                    "-h",
                    self.topology.host,
                    "-p",
                    str(self.port),
                    "-t",
                    "2",
                ],
                capture_output=True,
                check=False,
                timeout=5,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one statement as the ``xrides`` superuser over TCP."""
        env = self.base_env() | {"PGPASSWORD": settings.PG_PASSWORD, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                self.topology.host,
                "-p",
                str(self.port),
                "-U",
                settings.PG_USER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise StackError(f"postgres: '{sql}' failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def after_healthy(self) -> None:
        """Create the ``xrides`` database if missing (initdb only creates ``postgres``)."""
        # The names are module constants, not input, so there is nothing to inject.
        query = f"SELECT 1 FROM pg_database WHERE datname = '{settings.PG_DATABASE}'"  # noqa: S608
        exists = self.psql(query)
        if exists != "1":
            self.psql(f'CREATE DATABASE "{settings.PG_DATABASE}" OWNER "{settings.PG_USER}"')
            say(f"postgres: created database {settings.PG_DATABASE}")


def storage_format_args(cluster_id: str, config: Path) -> list[str]:
    """``kafka-storage format``'s arguments. The id is joined with ``=``: a base64url UUID starts
    with ``-`` one time in 64, and argparse then takes it for an option (the format fails)."""
    return ["format", f"--cluster-id={cluster_id}", f"--config={config}", "--ignore-formatted"]


class Kafka(Service):
    """A KRaft Kafka node (broker and controller in one process) from Maven Central jars on one
    classpath: the one node of the single profile, or one of the cluster's three voters."""

    health_timeout = 90.0
    stop_timeout = 60.0
    _jdk: Jdk | None = None

    def __init__(self, ctx: Context, node: int = 1) -> None:
        super().__init__(ctx)
        self.node = node
        self.name = f"kafka-{node}" if ctx.topology.cluster else "kafka"
        self.ports = (ctx.topology.kafka_port(node), ctx.topology.kafka_controller_port(node))

    @property
    def dist(self) -> Path:
        """Download directory holding the pom and the ``lib`` classpath."""
        return self.ctx.layout.downloads / f"kafka-{settings.KAFKA_VERSION}"

    @property
    def lib(self) -> Path:
        """All Kafka jars plus log4j2; also usable by benchmarks (ProducerPerformance)."""
        return self.dist / "lib"

    @property
    def jdk(self) -> Jdk:
        """Java 17+ (checked in preflight)."""
        if self._jdk is None:
            self._jdk = find_jdk("kafka", 17, self.ctx.environ)
        return self._jdk

    def artifacts(self) -> list[MavenArtifact]:
        """Broker, tools (TopicCommand, ProducerPerformance) and the log4j2 binding."""
        return [
            MavenArtifact("org.apache.kafka", "kafka_2.13", settings.KAFKA_VERSION),
            MavenArtifact("org.apache.kafka", "kafka-tools", settings.KAFKA_VERSION),
            MavenArtifact("org.slf4j", "slf4j-api", settings.SLF4J_VERSION),
            MavenArtifact("org.apache.logging.log4j", "log4j-slf4j2-impl", settings.LOG4J_VERSION),
            MavenArtifact("org.apache.logging.log4j", "log4j-core", settings.LOG4J_VERSION),
        ]

    def preflight(self) -> None:
        """Fail early on a missing or too old Java."""
        _ = self.jdk

    def run_class(self, quiet: bool = True) -> list[str]:
        """``java ... -cp lib/*`` prefix for running any Kafka class with the stack's classpath."""
        config = self.home / ("log4j2-tools.properties" if quiet else "log4j2.properties")
        return [str(self.jdk.java), f"-Dlog4j2.configurationFile={config}", "-cp", f"{self.lib}/*"]

    def prepare(self) -> None:
        """Fetch jars, write configs, and format the KRaft storage once."""
        fetch_maven(f"kafka-{settings.KAFKA_VERSION}", self.artifacts(), self.dist)
        make_dir(self.home)
        data = make_dir(self.home / "data")
        write_if_changed(
            self.home / "server.properties", configs.kafka_server_properties(data, self.topology, self.node)
        )
        write_if_changed(self.home / "log4j2.properties", configs.log4j2_properties())
        write_if_changed(self.home / "log4j2-tools.properties", configs.log4j2_properties(quiet=True))
        self._write_run_class_script()
        if not (data / "meta.properties").exists():
            self._format(data)

    @property
    def cluster_id_file(self) -> Path:
        """One id for every node of the cluster (the stack root's), the node's own otherwise."""
        return (
            self.ctx.layout.root / "kafka-cluster-id" if self.topology.cluster else self.home / "cluster-id"
        )

    def _cluster_id(self) -> str:
        """Kafka's base64url UUID, kept in a file so a re-format reuses it."""
        path = self.cluster_id_file
        if path.exists():
            return path.read_text(encoding="ascii").strip()
        value = urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        path.write_text(value + "\n", encoding="ascii")
        return value

    def _format(self, data: Path) -> None:
        say("kafka: formatting KRaft storage")
        cmd = [
            *self.run_class(),
            "kafka.tools.StorageTool",
            *storage_format_args(self._cluster_id(), self.home / "server.properties"),
        ]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, env=self.base_env()
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise StackError(
                f"kafka: formatting storage in {data} failed (exit {result.returncode}):\n{tail}"
            )

    def _write_run_class_script(self) -> None:
        """``.stack/bin/kafka-run-class CLASS ARGS`` for benchmarks and debugging."""
        script = self.ctx.layout.bin / "kafka-run-class"
        quoted = " ".join(f"'{part}'" for part in self.run_class())
        content = (
            "#!/bin/sh\n"
            "# Generated by deploy.stack: run a Kafka class with the local stack's classpath,\n"
            "# e.g. kafka-run-class org.apache.kafka.tools.ProducerPerformance --topic rides ...\n"
            f'exec {quoted} "$@"\n'
        )
        if write_if_changed(script, content):
            script.chmod(0o755)

    def launch(self) -> LaunchSpec:
        """``kafka.Kafka`` with a small heap; Kafka is fine running as root."""
        argv = [
            str(self.jdk.java),
            "-Xmx512m",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.ctx.layout.logs}",
            "-cp",
            f"{self.lib}/*",
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]
        return LaunchSpec(argv=argv, env=self.base_env(), cwd=self.home)

    def healthy(self) -> bool:
        """A Metadata answer listing at least one broker: the broker is registered and serving."""
        try:
            return fetch_metadata(self.topology.host, self.port, timeout=2.0).brokers >= 1
        except OSError:
            return False

    def after_healthy(self) -> None:
        """Create the platform topics that are missing, once every broker has joined (node 1 only:
        topics are the cluster's, and a replication factor of 3 needs the three brokers)."""
        if self.node != 1:
            return
        deadline = time.monotonic() + 90
        while True:
            try:
                brokers = fetch_metadata(self.topology.host, self.port, timeout=2.0).brokers
            except OSError:
                brokers = 0
            if brokers >= self.topology.brokers:
                break
            if time.monotonic() > deadline:
                raise StackError(f"kafka: {brokers} of {self.topology.brokers} brokers joined within 90 s")
            time.sleep(0.5)
        wanted = wanted_topics(self.ctx.environ, self.topology.brokers)
        created = ensure_topics(self.run_class(), wanted, self.topology.host, self.port)
        if created:
            say(f"kafka: created topics {', '.join(created)}")

    def data_dirs(self) -> list[Path]:
        """The log dirs plus the cluster id (a purged cluster gets a fresh one)."""
        return [self.home / "data", self.cluster_id_file]


class Elasticsearch(Service):
    """Elasticsearch's minimal integ-test distribution, run as the service user on Java 21+: the
    single profile's one node, or one of the cluster's three (master-eligible data nodes)."""

    health_timeout = 120.0
    stop_timeout = 60.0
    _jdk: Jdk | None = None

    def __init__(self, ctx: Context, node: int = 1) -> None:
        super().__init__(ctx)
        self.node = node
        self.name = f"elasticsearch-{node}" if ctx.topology.cluster else "elasticsearch"
        self.ports = (ctx.topology.es_port(node), ctx.topology.es_transport_port(node))

    @property
    def install(self) -> Path:
        """Unpacked distribution, one directory per version (shared by the cluster's nodes)."""
        if self.topology.cluster:
            return self.ctx.layout.root / "elasticsearch-dist" / settings.ES_VERSION
        return self.home / settings.ES_VERSION

    @property
    def jdk(self) -> Jdk:
        """ES 9 needs Java 21+; the newest JDK found is preferred (ES ships with 25)."""
        if self._jdk is None:
            self._jdk = find_jdk(
                "elasticsearch",
                21,
                self.ctx.environ,
                ("XRIDES_ES_JAVA_HOME", "ES_JAVA_HOME"),
                prefer_newest=True,
            )
        return self._jdk

    def preflight(self) -> None:
        """Java 21+, the service user, and a stack dir that user can reach."""
        _ = self.jdk
        ensure_user()
        ensure_traversable(self.ctx.layout.root, SERVICE_USER)

    def prepare(self) -> None:
        """Fetch and unpack the zip, write config into our own ES_PATH_CONF, hand dirs to the user."""
        coordinate = MavenArtifact(
            "org.elasticsearch.distribution.integ-test-zip", "elasticsearch", settings.ES_VERSION, type="zip"
        )
        dist = self.ctx.layout.downloads / f"elasticsearch-{settings.ES_VERSION}"
        lib = fetch_maven(f"elasticsearch-{settings.ES_VERSION}", [coordinate], dist, transitive=False)
        archive = lib / f"elasticsearch-{settings.ES_VERSION}.zip"
        make_dir(self.home)
        if not (self.install / ".complete").exists():
            say(f"{self.name}: unpacking {archive.name}")
            make_dir(self.install.parent)
        extract_zip(archive, self.install)
        config = make_dir(self.home / "config")
        first_start = not (self.home / "data").exists() or not any((self.home / "data").iterdir())
        data, logs, tmp = (make_dir(self.home / sub) for sub in ("data", "logs", "tmp"))
        make_dir(config / "jvm.options.d")
        stock = self.install / "config"
        for item in stock.iterdir():
            if item.is_file() and item.name not in {"elasticsearch.yml", "jvm.options"}:
                shutil.copyfile(item, config / item.name)
        yml = configs.elasticsearch_yml(data, logs, self.topology, self.node, bootstrap=first_start)
        write_if_changed(config / "elasticsearch.yml", yml)
        stock_jvm = (stock / "jvm.options").read_text(encoding="utf-8")
        write_if_changed(config / "jvm.options", configs.elasticsearch_jvm_options(stock_jvm, logs))
        for path in (self.home, config, *config.iterdir(), data, logs, tmp):
            chown_one(path)
        for path in (data, logs):
            chown_tree(path)

    def launch(self) -> LaunchSpec:
        """``bin/elasticsearch`` (CLI JVM that spawns the server JVM) as the service user."""
        env = self.base_env() | {
            "ES_JAVA_HOME": str(self.jdk.home),
            "ES_PATH_CONF": str(self.home / "config"),
            # three nodes share the machine in the cluster profile
            "ES_JAVA_OPTS": "-Xms384m -Xmx384m" if self.topology.cluster else "-Xms512m -Xmx512m",
            "ES_TMPDIR": str(self.home / "tmp"),
        }
        return LaunchSpec(
            argv=[str(self.install / "bin" / "elasticsearch")],
            env=env,
            cwd=self.home / "logs",
            user=run_as(),
        )

    def healthy(self) -> bool:
        """The node answers, and its cluster is green or yellow (yellow is normal with replicas on
        one node) with every node of the topology joined."""
        url = f"http://{self.topology.host}:{self.port}/_cluster/health"
        result = http_request(url, timeout=2.0)
        body = result.json()
        return (
            result.status == 200
            and isinstance(body, dict)
            and body.get("status") in {"green", "yellow"}
            and int(body.get("number_of_nodes", 0)) >= self.topology.es_nodes
        )

    def data_dirs(self) -> list[Path]:
        """Indices and the node's own logs."""
        return [self.home / "data", self.home / "logs"]


class S3(Service):
    """s3proxy with the filesystem backend: objects are plain files under ``s3/data``."""

    health_timeout = 60.0
    _jdk: Jdk | None = None

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.name = "s3"
        self.ports = (ctx.topology.s3_port,)

    @property
    def jdk(self) -> Jdk:
        """s3proxy 3 needs Java 17+."""
        if self._jdk is None:
            self._jdk = find_jdk("s3", 17, self.ctx.environ)
        return self._jdk

    @property
    def jar(self) -> Path:
        """The self-contained s3proxy jar."""
        dist = self.ctx.layout.downloads / f"s3proxy-{settings.S3_VERSION}"
        return dist / "lib" / f"s3proxy-{settings.S3_VERSION}-jar-with-dependencies.jar"

    def preflight(self) -> None:
        """Fail early on a missing or too old Java."""
        _ = self.jdk

    def ensure_bucket(self) -> None:
        """A top-level directory is a bucket for the filesystem backend."""
        make_dir(self.home / "data" / settings.S3_BUCKET)

    def prepare(self) -> None:
        """Fetch the fat jar, create the bucket directory, write the properties."""
        artifact = MavenArtifact(
            "org.gaul", "s3proxy", settings.S3_VERSION, classifier="jar-with-dependencies"
        )
        fetch_maven(f"s3proxy-{settings.S3_VERSION}", [artifact], self.jar.parent.parent, transitive=False)
        make_dir(self.home)
        self.ensure_bucket()
        endpoint = self.topology.s3_endpoint
        write_if_changed(
            self.home / "s3proxy.properties", configs.s3proxy_properties(self.home / "data", endpoint)
        )

    def launch(self) -> LaunchSpec:
        """``java -jar s3proxy --properties ...`` with a small heap."""
        argv = [
            str(self.jdk.java),
            "-Xms64m",
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-jar",
            str(self.jar),
            "--properties",
            str(self.home / "s3proxy.properties"),
        ]
        return LaunchSpec(argv=argv, env=self.base_env() | {"LOG_LEVEL": "info"}, cwd=self.home)

    def healthy(self) -> bool:
        """A signed ``HEAD /<bucket>`` answers 200: up, credentials accepted, bucket present."""
        host = f"{self.topology.host}:{self.port}"
        headers = sign_headers(
            "HEAD",
            host,
            f"/{settings.S3_BUCKET}",
            access_key=settings.S3_ACCESS_KEY,
            secret_key=settings.S3_SECRET_KEY,
            region=settings.S3_REGION,
        )
        return http_request(f"http://{host}/{settings.S3_BUCKET}", "HEAD", headers, timeout=2.0).status == 200


class Prometheus(Service):
    """Debian's Prometheus binary as our own process (the Debian service is left alone)."""

    health_timeout = 60.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.name = "prometheus"
        self.ports = (ctx.topology.prometheus_port,)

    @property
    def config(self) -> Path:
        """The generated prometheus.yml."""
        return self.home / "prometheus.yml"

    def preflight(self) -> None:
        """Install the package if the binary is missing."""
        ensure_debian_package(Path(settings.PROMETHEUS_BIN), settings.PROMETHEUS_PACKAGE)

    def render(self) -> str:
        """Config for the current registry and the repo's rule folder (if it exists yet)."""
        rules = self.ctx.layout.repo / "dashboards" / "prometheus" / "rules"
        t = self.topology
        targets = [(proc.name, proc.metrics_target) for proc in platform_processes(t)]
        if t.cluster:  # the session cluster's reporters: the JobManager and each TaskManager
            targets.append(("flink", f"{t.host}:{t.flink_port('reporter')}"))
            targets += [
                ("flink", f"{t.host}:{t.flink_port('reporter', n)}") for n in range(1, t.taskmanagers + 1)
            ]
        else:
            targets.append(("flink", f"{t.host}:{t.metrics_port('flink-reporter')}"))
        rule_glob = str(rules / "*.yml") if rules.is_dir() else None
        text = configs.prometheus_yml(targets, rule_glob, f"{t.host}:{self.port}")
        if rules.is_dir():
            # A digest of the rule files makes an edited rule count as a config change (-> reload).
            digest = hashlib.sha256()
            for path in sorted(rules.glob("*.yml")):
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
            text += f"# rule files digest: {digest.hexdigest()[:16]}\n"
        return text

    def _write_checked(self) -> bool:
        """Write the config if it changed, validated by promtool so a bad rule file is named clearly."""
        make_dir(self.home)
        content = self.render()
        try:
            if self.config.read_text(encoding="utf-8") == content:
                return False
        except FileNotFoundError:
            pass
        candidate = self.home / "prometheus.yml.new"
        candidate.write_text(content, encoding="utf-8")
        promtool = Path(settings.PROMTOOL_BIN)
        if promtool.exists():
            result = subprocess.run(
                [str(promtool), "check", "config", str(candidate)],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if result.returncode != 0:
                candidate.unlink(missing_ok=True)
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
                raise StackError(f"prometheus: generated config (or a rule file) is invalid:\n{tail}")
        candidate.replace(self.config)
        return True

    def prepare(self) -> None:
        """Write the config and the TSDB directory."""
        self._write_checked()
        make_dir(self.home / "data")

    def refresh(self) -> None:
        """Reload (SIGHUP) a running Prometheus when targets or rule files changed."""
        if self._write_checked():
            pid = live_pid(self.ctx.layout.pid_file(self.name))
            if pid is not None:
                os.kill(pid, signal.SIGHUP)
                say("prometheus: config changed, reloaded")

    def launch(self) -> LaunchSpec:
        """Prometheus on 127.0.0.1 with its TSDB under the stack dir."""
        argv = [
            settings.PROMETHEUS_BIN,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--web.listen-address={self.topology.host}:{self.port}",
            "--storage.tsdb.retention.time=7d",
            "--web.enable-lifecycle",
        ]
        return LaunchSpec(argv=argv, env=self.base_env(), cwd=self.home)

    def healthy(self) -> bool:
        """``/-/ready`` answers 200 once the TSDB is loaded."""
        return http_request(f"{self.topology.prometheus_url}/-/ready", timeout=2.0).status == 200


def service_phases(ctx: Context) -> list[list[Service]]:
    """Every service, in groups started one after the other (a group starts together and is waited
    for together): the stores first; then, in the cluster, what needs them running (the replica
    copies the primary; Flink keeps its checkpoints in S3; HAProxy fronts the API)."""
    t = ctx.topology
    stores: list[Service] = [
        Postgres(ctx),
        *(Kafka(ctx, n) for n in range(1, t.brokers + 1)),
        *(Elasticsearch(ctx, n) for n in range(1, t.es_nodes + 1)),
        S3(ctx),
        Prometheus(ctx),
    ]
    if not t.cluster:
        return [stores]
    from deploy.stack.cluster_services import cluster_phase  # noqa: PLC0415 - the cluster's only

    return [stores, cluster_phase(ctx)]


def all_services(ctx: Context) -> list[Service]:
    """Every service in start order."""
    return [service for phase in service_phases(ctx) for service in phase]


def service_names(ctx: Context) -> tuple[str, ...]:
    return tuple(service.name for service in all_services(ctx))
