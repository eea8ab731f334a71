"""Registry of the platform's own Python processes the launcher runs.

The stack starts them after its services are healthy, with ``.stack/env`` in
their environment, and Prometheus scrapes every registered metrics target. A
process whose module does not exist yet (or without the project venv) is
skipped, so the launcher works while the platform is still being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploy.stack.topology import Topology


@dataclass(frozen=True)
class PlatformProcess:
    """One platform process: argv relative to the repo, its health URL and metrics target."""

    name: str
    argv: tuple[str, ...]
    health_url: str
    metrics_target: str
    health_timeout: float = 60.0
    # Scheduling priority (``nice``): the ack path (API, Kafka) and the system of record (persister,
    # PostgreSQL) run at 0; the stream side that may lag by seconds without breaking a promise runs
    # at 10, so on a small machine a burst slows enrichment, not acknowledgements. The launcher also
    # sets it on the process's scheduler autogroup, without which nice does not rank processes of
    # different sessions (processes.set_autogroup_nice). Kubernetes expresses the same intent with
    # CPU requests and priority classes (docs/architecture.md).
    nice: int = 0
    env: tuple[tuple[str, str], ...] = ()  # settings of this process only (its own port, say)

    @property
    def module(self) -> str:
        """The module run with ``-m`` (what must exist for the process to be started)."""
        if "-m" in self.argv:
            return self.argv[self.argv.index("-m") + 1]
        return ""

    def module_present(self, repo: Path) -> bool:
        """True when ``<repo>/<module>/__main__.py`` exists, i.e. the process can be run."""
        if not self.module:
            return False
        return (repo.joinpath(*self.module.split(".")) / "__main__.py").is_file()

    def resolved_argv(self, repo: Path) -> list[str]:
        """argv with the interpreter path made absolute against the repo."""
        first = Path(self.argv[0])
        head = str(first if first.is_absolute() else repo / first)
        niced = ["nice", "-n", str(self.nice)] if self.nice else []
        return [*niced, head, *self.argv[1:]]

    @property
    def port(self) -> int:
        """Port from the metrics target, shown by ``status``."""
        return int(self.metrics_target.rsplit(":", 1)[1])


# The setting each process reads its health and metrics port from (its settings class).
_PORT_SETTINGS = {
    "persister": "XRIDES_METRICS_PORT",
    "es-indexer": "XRIDES_INDEXER_METRICS_PORT",
    "flink-job": "XRIDES_JOB_METRICS_PORT",
    "archiver": "XRIDES_METRICS_PORT",
    "reconcile": "XRIDES_METRICS_PORT",
    "query-service": "XRIDES_QUERY_PORT",
}


def platform_processes(topology: Topology) -> tuple[PlatformProcess, ...]:
    """The platform's processes for a topology: in the cluster, two API processes (behind HAProxy,
    a service of the stack) and the stream job submitted to the session cluster by its supervisor
    instead of a mini cluster in the job's own process."""
    host = topology.host

    def at(port: int) -> tuple[str, str]:
        return f"http://{host}:{port}/healthz", f"{host}:{port}"

    apis = []
    for index in range(1, topology.apis + 1):
        port = topology.api_backend_port(index)
        name = "api" if topology.apis == 1 else f"api-{index}"
        health, target = at(port)
        env = (("XRIDES_API_PORT", str(port)),)
        apis.append(
            PlatformProcess(name, (".venv/bin/python", "-m", "ingest_service"), health, target, env=env)
        )

    def worker(name: str, argv: tuple[str, ...], nice: int = 0, timeout: float = 60.0) -> PlatformProcess:
        port = topology.metrics_port(name)
        health, target = at(port)
        env = ((_PORT_SETTINGS[name], str(port)),)
        return PlatformProcess(name, (".venv/bin/python", *argv), health, target, timeout, nice, env)

    job = ("-m", "flink_jobs", "submit" if topology.cluster else "job")
    return (
        *apis,
        worker("persister", ("-m", "persister")),
        worker("es-indexer", ("-m", "indexer"), nice=10),
        # a JVM and the Python workers start first (mini cluster), or a job is submitted (cluster)
        worker("flink-job", job, nice=10, timeout=180.0),
        worker("archiver", ("-m", "archiver", "serve"), nice=10),
        worker("reconcile", ("-m", "reconcile", "serve"), nice=10),
        # the query DSL in its own process: the API forwards POST /v1/query to it (XRIDES_QUERY_URL)
        worker("query-service", ("-m", "query_service"), nice=10),
    )


REGISTRY: tuple[PlatformProcess, ...] = platform_processes(Topology())
