"""Registry of the platform's own Python processes the launcher runs.

The stack starts them after its services are healthy, with ``.stack/env`` in
their environment, and Prometheus scrapes every registered metrics target. A
process whose module does not exist yet (or without the project venv) is
skipped, so the launcher works while the platform is still being written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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


REGISTRY: tuple[PlatformProcess, ...] = (
    PlatformProcess(
        name="api",
        argv=(".venv/bin/python", "-m", "ingest_service"),
        health_url="http://127.0.0.1:8000/healthz",
        metrics_target="127.0.0.1:8000",
    ),
    PlatformProcess(
        name="persister",
        argv=(".venv/bin/python", "-m", "persister"),
        health_url="http://127.0.0.1:9101/healthz",
        metrics_target="127.0.0.1:9101",
    ),
    PlatformProcess(
        name="es-indexer",
        argv=(".venv/bin/python", "-m", "indexer"),
        health_url="http://127.0.0.1:9103/healthz",
        metrics_target="127.0.0.1:9103",
        nice=10,
    ),
    PlatformProcess(
        name="flink-job",
        argv=(".venv/bin/python", "-m", "flink_jobs", "job"),
        health_url="http://127.0.0.1:9102/healthz",
        metrics_target="127.0.0.1:9102",
        health_timeout=120.0,  # a JVM and the Python workers start first
        nice=10,
    ),
    PlatformProcess(
        name="archiver",
        argv=(".venv/bin/python", "-m", "archiver", "serve"),
        health_url="http://127.0.0.1:9104/healthz",
        metrics_target="127.0.0.1:9104",
        nice=10,
    ),
    PlatformProcess(
        name="reconcile",
        argv=(".venv/bin/python", "-m", "reconcile", "serve"),
        health_url="http://127.0.0.1:9105/healthz",
        metrics_target="127.0.0.1:9105",
        nice=10,
    ),
)
