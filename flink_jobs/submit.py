"""``python -m flink_jobs submit``: keep the rides job running on a Flink session cluster.

The cluster profile runs this supervisor in place of the mini-cluster job. Every few seconds it asks
the JobManager's REST API for the job. When no run of it is alive (the first start; a JobManager
restarted without high availability, which forgets its jobs; a job that failed for good) it submits
it with ``flink run -d -py flink_jobs/rides_job.py graph``, resuming from the newest completed
checkpoint retained on S3 (``-s``: the Kafka positions and the per-booking state as of that
checkpoint), or from the committed Kafka offsets when there is none. A lost TaskManager is Flink's
own business: the job restarts on the slots left, from its latest checkpoint; the supervisor watches.

Its ``/healthz`` answers 200 while the job runs; ``/metrics`` counts submissions.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from flink_jobs.rides_job import JOB_NAME, checkpoint_uri
from flink_jobs.settings import StreamSettings
from xrides.archive.store import ArchiveStore, StoreConfig
from xrides.health import serve_in_thread

log = logging.getLogger("flink_jobs.submit")

REPO = Path(__file__).resolve().parents[1]
POLL_SECONDS = 3.0
SUBMIT_TIMEOUT_S = 300.0
# states after which a job run will not come back by itself (SUSPENDED: its JobManager went away)
ENDED = frozenset({"FINISHED", "FAILED", "CANCELED", "SUSPENDED"})
CHECKPOINT = re.compile(r"^(?P<job>.+)/(?P<jid>[0-9a-f]{32})/chk-(?P<n>\d+)/_metadata$")

SUBMISSIONS = Counter("xrides_flink_submissions", "Submissions of the rides job to the cluster", ["outcome"])
RUNNING = Gauge("xrides_flink_job_running", "1 while the rides job runs on the cluster")


@dataclass(frozen=True, slots=True)
class JobRun:
    jid: str
    state: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    uri: str
    jid: str
    modified: float


class SessionCluster:
    """The JobManager's REST API: which runs of the job exist."""

    def __init__(self, rest_url: str) -> None:
        self.rest_url = rest_url.rstrip("/")

    def runs(self) -> list[JobRun] | None:
        """Runs of the job, or None when the JobManager does not answer."""
        try:
            with urllib.request.urlopen(f"{self.rest_url}/jobs/overview", timeout=5) as response:  # noqa: S310
                jobs = orjson.loads(response.read()).get("jobs", [])
        except (OSError, ValueError):
            return None
        return [JobRun(j["jid"], j["state"]) for j in jobs if j.get("name") == JOB_NAME]


class CheckpointStore:
    """The job's retained checkpoints on S3 (``<state dir>/<group>/<job id>/chk-<n>/_metadata``)."""

    def __init__(self, settings: StreamSettings) -> None:
        uri = checkpoint_uri(settings)
        if not uri.startswith("s3://"):
            raise ValueError(f"the session cluster keeps checkpoints on S3; XRIDES_FLINK_STATE_DIR is {uri}")
        bucket, _, self.prefix = uri.removeprefix("s3://").partition("/")
        self.bucket = bucket
        self.store = ArchiveStore(
            StoreConfig(
                settings.s3_endpoint,
                settings.s3_access_key,
                settings.s3_secret_key,
                bucket,
                region=settings.s3_region,
            )
        )

    def completed(self) -> list[Checkpoint]:
        """Completed checkpoints, newest first: ``_metadata`` is written last, so a checkpoint cut
        off by a crash is never listed."""
        found = []
        for obj in self.store.objects(self.prefix + "/"):
            match = CHECKPOINT.match(obj.key)
            if match:
                directory = obj.key.removesuffix("/_metadata")
                found.append(Checkpoint(f"s3://{self.bucket}/{directory}", match["jid"], obj.modified))
        return sorted(found, key=lambda c: c.modified, reverse=True)

    def prune(self, keep_jid: str) -> int:
        """Delete older runs' checkpoints once ``keep_jid`` has one of its own; returns objects deleted."""
        if not any(c.jid == keep_jid for c in self.completed()):
            return 0
        deleted = 0
        for obj in self.store.objects(self.prefix + "/"):
            parts = obj.key[len(self.prefix) + 1 :].split("/", 1)
            if parts[0] != keep_jid and re.fullmatch(r"[0-9a-f]{32}", parts[0]):
                self.store.delete(obj.key)
                deleted += 1
        return deleted


def flink_command(restore: str | None) -> list[str]:
    """``flink run`` of the job's graph, detached, resuming from ``restore`` when given."""
    import pyflink  # noqa: PLC0415 - the package only (its bin/), no JVM

    flink = Path(pyflink.__file__).parent / "bin" / "flink"
    resume = ["-s", restore, "--allowNonRestoredState"] if restore else []
    return [str(flink), "run", "-d", *resume, "-py", str(REPO / "flink_jobs" / "rides_job.py"), "graph"]


def submit_env(settings: StreamSettings) -> dict[str, str]:
    """The CLI's environment: the cluster's client configuration and lib/, and the project on the
    Python path of the client that builds the graph."""
    env = dict(os.environ)
    if settings.flink_conf_dir:
        env["FLINK_CONF_DIR"] = settings.flink_conf_dir
    if settings.flink_lib_dir:
        env["FLINK_LIB_DIR"] = settings.flink_lib_dir
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class Supervisor:
    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.cluster = SessionCluster(settings.flink_rest_url)
        self.checkpoints = CheckpointStore(settings)
        self.state = "starting"
        self.running_jid: str | None = None

    def status(self) -> tuple[dict[str, Any], bool]:
        ok = self.state == "RUNNING"
        return {"status": "ok" if ok else self.state.lower(), "job": self.running_jid}, ok

    def step(self) -> None:
        runs = self.cluster.runs()
        if runs is None:
            self.state = "jobmanager-unreachable"
            RUNNING.set(0)
            return
        alive = [r for r in runs if r.state not in ENDED]
        if alive:
            self.state, self.running_jid = alive[0].state, alive[0].jid
            RUNNING.set(1 if self.state == "RUNNING" else 0)
            if self.state == "RUNNING":
                deleted = self.checkpoints.prune(alive[0].jid)
                if deleted:
                    log.info("older runs' checkpoints deleted", extra={"flink.objects": deleted})
            return
        RUNNING.set(0)
        self.submit()

    def submit(self) -> None:
        newest = next(iter(self.checkpoints.completed()), None)
        restore = newest.uri if newest else None
        self.state = "submitting"
        log.info("submitting the rides job", extra={"flink.checkpoint": restore or "none"})
        began = time.monotonic()
        try:
            result = subprocess.run(
                flink_command(restore),
                env=submit_env(self.settings),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=SUBMIT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            SUBMISSIONS.labels("timeout").inc()
            log.exception("flink run did not finish", extra={"flink.timeout_s": SUBMIT_TIMEOUT_S})
            return
        took = round(time.monotonic() - began, 1)
        if result.returncode != 0:
            SUBMISSIONS.labels("failed").inc()
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            log.error("flink run failed", extra={"flink.exit": result.returncode, "flink.output": tail})
            return
        SUBMISSIONS.labels("submitted").inc()
        log.info("rides job submitted", extra={"flink.seconds": took, "flink.checkpoint": restore or "none"})


def supervise(settings: StreamSettings) -> None:
    if not settings.flink_rest_url:
        raise SystemExit("XRIDES_FLINK_REST_URL is not set: submit needs a session cluster's REST address")
    supervisor = Supervisor(settings)
    serve_in_thread(settings.metrics_host, settings.job_metrics_port, supervisor.status)
    while True:
        try:
            supervisor.step()
        except Exception:  # S3 or REST hiccup: log, keep supervising
            log.exception("supervision step failed")
        time.sleep(POLL_SECONDS)
