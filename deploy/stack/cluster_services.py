"""The cluster profile's own services: a PostgreSQL streaming replica, a Flink session cluster (a
JobManager and TaskManagers, from the ``apache-flink`` wheel's ``bin/`` and ``lib/``), and HAProxy
in front of the API processes. They start after the stores (the replica copies the primary, Flink's
checkpoints go to S3).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from deploy.stack import configs, settings
from deploy.stack.accounts import SERVICE_USER, chown_one, chown_tree, ensure_user, run_as
from deploy.stack.artifacts import MavenArtifact, ensure_debian_package, fetch_maven
from deploy.stack.errors import StackError
from deploy.stack.jvm import Jdk, find_jdk
from deploy.stack.layout import Context
from deploy.stack.preflight import ensure_traversable
from deploy.stack.probes import http_request
from deploy.stack.processes import LaunchSpec
from deploy.stack.progress import say
from deploy.stack.services import Postgres, Service, make_dir, write_if_changed

REPLICATION_SLOT = "xrides_replica"
PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
S3_PLUGIN = MavenArtifact("org.apache.flink", "flink-s3-fs-presto", "2.2.0")  # 2.2.1 is not published


class PostgresReplica(Postgres):
    """A hot standby streaming from the primary: ``pg_basebackup -R`` once, then the same server
    binary in recovery. Reads that may lag a moment (queries, tracking) go here."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.name = "postgres-replica"
        self.ports = (ctx.topology.pg_replica_port,)

    def prepare(self) -> None:
        make_dir(self.home)
        chown_one(self.home)
        if not (self.data / "PG_VERSION").exists():
            self._base_backup()
        self._clear_stale_lock()
        write_if_changed(
            self.data / "xrides-stack.conf", configs.postgres_conf(self.topology.host, self.port)
        )

    def _base_backup(self) -> None:
        if self.data.exists():
            shutil.rmtree(self.data)
        say("postgres-replica: copying the primary (pg_basebackup)")
        env = self.base_env() | {"PGPASSWORD": settings.PG_PASSWORD}
        argv = [str(self.bin / "pg_basebackup"), "-h", self.topology.host, "-p", str(self.topology.pg_port)]
        argv += [
            "-U",
            settings.PG_USER,
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "-C",
            "-S",
            REPLICATION_SLOT,
        ]
        result = subprocess.run(
            argv,
            cwd=self.home,
            env=env,
            user=run_as(),
            group=run_as(),
            extra_groups=[] if run_as() else None,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if result.returncode != 0 and "already exists" in result.stderr:  # a slot left by a purged replica
            self._drop_slot()
            return self._base_backup()
        if result.returncode != 0:
            raise StackError(f"postgres-replica: pg_basebackup failed:\n{result.stderr.strip()[-2000:]}")
        return None

    def _drop_slot(self) -> None:
        primary = Postgres(self.ctx)
        primary.psql(f"SELECT pg_drop_replication_slot('{REPLICATION_SLOT}')")

    def after_healthy(self) -> None:
        """Nothing to create: the replica follows the primary's databases."""

    def data_dirs(self) -> list[Path]:
        return [self.home / "data"]


class FlinkProcess(Service):
    """One process of the session cluster, run from the wheel's Flink distribution with its own
    configuration directory (``config.yaml``), logs, and a plugins directory that adds Flink's S3
    filesystem (checkpoints and savepoints on the S3 server) and keeps the Prometheus reporter."""

    health_timeout = 120.0
    script = ""
    _jdk: Jdk | None = None

    @property
    def flink_home(self) -> Path:
        """The Flink distribution inside the venv's ``apache-flink`` wheel (the launcher itself runs
        on the system Python, so it is found on disk, not imported)."""
        for site in self.ctx.layout.venv_site_packages():
            if (site / "pyflink" / "bin" / "jobmanager.sh").is_file():
                return site / "pyflink"
        raise StackError("the venv has no apache-flink wheel: run 'make install' first")

    @property
    def jdk(self) -> Jdk:
        if self._jdk is None:
            self._jdk = find_jdk("flink", 17, self.ctx.environ)
        return self._jdk

    @property
    def plugins(self) -> Path:
        return self.ctx.layout.root / "flink-plugins"

    @property
    def lib(self) -> Path:
        """The wheel's lib/ plus the job's connector and the Python runtime (symlinks)."""
        return self.ctx.layout.root / "flink-lib"

    def preflight(self) -> None:
        _ = self.jdk

    def _prepare_shared(self) -> None:
        layout = self.ctx.layout
        s3 = fetch_maven(
            "flink-s3-fs-presto", [S3_PLUGIN], layout.downloads / "flink-s3-fs-presto", transitive=False
        )
        make_dir(self.plugins)
        for plugin in (self.flink_home / "plugins").iterdir():
            if plugin.is_dir():
                _link(plugin, self.plugins / plugin.name)
        make_dir(self.plugins / "s3-fs-presto")
        _link(
            s3 / "flink-s3-fs-presto-2.2.0.jar",
            self.plugins / "s3-fs-presto" / "flink-s3-fs-presto-2.2.0.jar",
        )
        make_dir(self.lib)
        for jar in (self.flink_home / "lib").glob("*.jar"):
            _link(jar, self.lib / jar.name)
        _link(self.flink_home / "opt" / "flink-python-2.2.1.jar", self.lib / "flink-python-2.2.1.jar")
        connector = layout.downloads / "flink-jars" / "lib" / "flink-sql-connector-kafka-5.0.0-2.2.jar"
        if not connector.exists():
            raise StackError(
                f"{connector} is missing: run up once in the single profile, or fetch the Flink jars"
            )
        _link(connector, self.lib / connector.name)

    def conf_values(self) -> dict[str, object]:
        t = self.topology
        venv_python = str(self.ctx.layout.venv_python)
        return {
            "jobmanager.rpc.address": t.host,
            "jobmanager.rpc.port": t.flink_port("jobmanager-rpc"),
            "jobmanager.bind-host": t.host,
            "jobmanager.memory.process.size": "768m",
            "jobmanager.execution.failover-strategy": "region",
            "blob.server.port": t.flink_port("blob"),
            "rest.address": t.host,
            "rest.bind-address": t.host,
            "rest.port": t.flink_rest_port,
            "taskmanager.numberOfTaskSlots": 2,  # one TaskManager lost: the job restarts on the other
            "cluster.evenly-spread-out-slots": True,  # ... but while both run, each holds a share
            "taskmanager.memory.process.size": "1024m",
            "parallelism.default": 2,
            # a killed TaskManager is noticed in seconds, not the default 50
            "heartbeat.timeout": 10000,
            "heartbeat.interval": 2000,
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": 1000,
            "restart-strategy.fixed-delay.delay": "3s",
            "execution.checkpointing.dir": f"s3://{settings.S3_BUCKET}/flink/checkpoints",
            "execution.checkpointing.savepoint-dir": f"s3://{settings.S3_BUCKET}/flink/savepoints",
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "execution.checkpointing.num-retained": 3,
            "s3.endpoint": t.s3_endpoint,
            "s3.path.style.access": True,
            "s3.access-key": settings.S3_ACCESS_KEY,
            "s3.secret-key": settings.S3_SECRET_KEY,
            "metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
            "python.executable": venv_python,
            "python.client.executable": venv_python,
            "python.pythonpath": str(self.ctx.layout.repo),
            "env.log.dir": str(self.home / "log"),
            "io.tmp.dirs": str(self.home / "tmp"),
        }

    def prepare(self) -> None:
        self._prepare_shared()
        conf = make_dir(self.home / "conf")
        make_dir(self.home / "log")
        make_dir(self.home / "tmp")
        for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties"):
            shutil.copyfile(self.flink_home / "conf" / name, conf / name)
        stock = (self.flink_home / "conf" / "config.yaml").read_text(encoding="utf-8")
        java_opts = _stock_java_opts(stock)
        values = {"env.java.opts.all": java_opts, **self.conf_values()}
        write_if_changed(conf / "config.yaml", "".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))

    def launch(self) -> LaunchSpec:
        repo = self.ctx.layout.repo
        env = self.base_env() | {
            "FLINK_CONF_DIR": str(self.home / "conf"),
            "FLINK_LOG_DIR": str(self.home / "log"),
            "FLINK_PLUGINS_DIR": str(self.plugins),
            "FLINK_LIB_DIR": str(self.lib),
            "JAVA_HOME": str(self.jdk.home),
            "PATH": f"{self.ctx.layout.venv_python.parent}:{self.base_env()['PATH']}",
            # The job's functions run in an interpreter embedded in the TaskManager (PyFlink's thread
            # mode), which starts from the base installation: it needs the project and the venv.
            "PYTHONPATH": os.pathsep.join([str(repo), *map(str, self.ctx.layout.venv_site_packages())]),
        }
        return LaunchSpec(
            argv=[str(self.flink_home / "bin" / self.script), "start-foreground"], env=env, cwd=self.home
        )

    def data_dirs(self) -> list[Path]:
        return [self.home / "log", self.home / "tmp"]


class FlinkJobManager(FlinkProcess):
    script = "jobmanager.sh"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.name = "flink-jobmanager"
        self.ports = (ctx.topology.flink_rest_port, ctx.topology.flink_port("jobmanager-rpc"))

    def conf_values(self) -> dict[str, object]:
        return {**super().conf_values(), "metrics.reporter.prom.port": self.topology.flink_port("reporter")}

    def healthy(self) -> bool:
        result = http_request(f"{self.topology.flink_rest_url}/overview", timeout=2.0)
        return result.status == 200


class FlinkTaskManager(FlinkProcess):
    script = "taskmanager.sh"

    def __init__(self, ctx: Context, index: int) -> None:
        super().__init__(ctx)
        self.index = index
        self.name = f"flink-taskmanager-{index}"
        t = ctx.topology
        self.ports = (t.flink_port("taskmanager-rpc", index), t.flink_port("taskmanager-data", index))

    def conf_values(self) -> dict[str, object]:
        t = self.topology
        return {
            **super().conf_values(),
            "taskmanager.host": t.host,
            "taskmanager.bind-host": t.host,
            "taskmanager.rpc.port": t.flink_port("taskmanager-rpc", self.index),
            "taskmanager.data.port": t.flink_port("taskmanager-data", self.index),
            "taskmanager.resource-id": self.name,
            "metrics.reporter.prom.port": t.flink_port("reporter", self.index),
        }

    def healthy(self) -> bool:
        """Registered with the JobManager under its resource id."""
        result = http_request(f"{self.topology.flink_rest_url}/taskmanagers", timeout=2.0)
        body = result.json()
        managers = body.get("taskmanagers", []) if isinstance(body, dict) else []
        return result.status == 200 and any(m.get("id") == self.name for m in managers)


class HAProxy(Service):
    """HAProxy (Debian's) in front of the API processes: health-checked every second, a backend
    that fails two checks is taken out, and a request whose connection fails is sent to the other."""

    health_timeout = 30.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.name = "haproxy"
        self.ports = (ctx.topology.api_port,)

    def preflight(self) -> None:
        ensure_debian_package(Path(settings.HAPROXY_BIN), settings.HAPROXY_PACKAGE)
        ensure_user()
        ensure_traversable(self.ctx.layout.root, SERVICE_USER)

    def prepare(self) -> None:
        make_dir(self.home)
        chown_one(self.home)
        t = self.topology
        backends = [(f"api-{n}", t.api_backend_port(n)) for n in range(1, t.apis + 1)]
        write_if_changed(self.home / "haproxy.cfg", configs.haproxy_cfg(t.host, t.api_port, backends))
        chown_tree(self.home)

    def launch(self) -> LaunchSpec:
        return LaunchSpec(
            argv=[settings.HAPROXY_BIN, "-W", "-db", "-f", str(self.home / "haproxy.cfg")],
            env=self.base_env(),
            cwd=self.home,
            user=run_as(),
        )

    def healthy(self) -> bool:
        """HAProxy's own answer (``monitor-uri``): up whether or not an API process is yet."""
        return http_request(f"{self.topology.api_url}/-/haproxy", timeout=2.0).status == 200

    def data_dirs(self) -> list[Path]:
        return []


def cluster_phase(ctx: Context) -> list[Service]:
    t = ctx.topology
    return [
        PostgresReplica(ctx),
        FlinkJobManager(ctx),
        *(FlinkTaskManager(ctx, n) for n in range(1, t.taskmanagers + 1)),
        HAProxy(ctx),
    ]


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(target)


def _stock_java_opts(config_yaml: str) -> str:
    """The ``env.java.opts.all`` of the wheel's config.yaml (the ``--add-opens`` Flink needs)."""
    lines = config_yaml.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == "all:" or line.strip().startswith("all: "):
            value = line.split("all:", 1)[1].strip()
            if value:
                return value
            return lines[index + 1].strip()
    raise StackError("the Flink wheel's config.yaml has no env.java.opts.all")
