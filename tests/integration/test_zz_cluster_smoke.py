"""The cluster profile, brought up beside the test stack: one ride end to end, one broker killed, down.

``make cluster-up`` is the production topology on one machine (docs/deployment.md): three Kafka
brokers (combined KRaft broker + controller), three Elasticsearch nodes, PostgreSQL with a streaming
replica, a Flink session cluster with the job submitted by its supervisor, two APIs behind HAProxy.
Here it runs in a temporary stack directory with every port moved by ``PORT_OFFSET`` and the
artifacts shared with the test stack (``XRIDES_DOWNLOADS_DIR``), so the main stack and its data are
untouched. A ride posted through the balancer must be stored in PostgreSQL and indexed by the Flink
job; with one broker SIGKILLed, a second ride must be acknowledged (after retrying the 503s the API
answers while the dead leader's partitions move, as a client does) and stored as well (replication
factor 3, two in-sync replicas required). The stack is taken down and purged whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from xrides.ride import example_ride

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
PORT_OFFSET = 3000  # the cluster's ports (8000 + 3000 for the balancer, ...) clear the test stack's


def _launcher(stack_env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.stack", *args],
        cwd=REPO, env=stack_env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if value:
            out[name.strip()] = value.strip().strip("'\"")
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Path, dict[str, str]]]:
    # not under pytest's 0700 base: Elasticsearch and PostgreSQL run as the stack's unprivileged user
    root = Path(tempfile.mkdtemp(prefix="xrides-cluster-smoke-"))
    root.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("XRIDES_")} | {
        "XRIDES_STACK_DIR": str(root),
        "XRIDES_PROFILE": "cluster",
        "XRIDES_PORT_OFFSET": str(PORT_OFFSET),
        "XRIDES_DOWNLOADS_DIR": str(REPO / ".stack" / "downloads"),
    }
    try:
        up = _launcher(env, "up", timeout=1200)
        assert up.returncode == 0, (up.stdout + up.stderr)[-6000:]
        yield root, _read_env(root / "env")
    finally:
        down = _launcher(env, "down", "--purge", timeout=300)
        shutil.rmtree(root, ignore_errors=True)
        assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]


def _request(url: str, key: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _until(what: str, check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError) as error:  # a node that is still starting
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(2)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s; last: {last!r}")


def _recent_ride(booking_id: int) -> dict[str, Any]:
    """A ride of the last hour: only rides inside the hot window go to Elasticsearch."""
    now = datetime.now(ZoneInfo("Asia/Kolkata"))  # the API's zone for dates sent without an offset

    def spelled(moment: datetime) -> str:  # as the clients' exports spell it: M/D/YYYY H:MM:SS
        return f"{moment.month}/{moment.day}/{moment.year} {moment.hour}:{moment.minute:02d}:00"

    return {
        **example_ride(),
        "booking_id": booking_id,
        "booking_created": spelled(now - timedelta(minutes=40)),
        "from_date": spelled(now - timedelta(minutes=10)),
    }


def _post_and_store(env: dict[str, str], booking_id: int) -> dict[str, Any]:
    api, key = env["XRIDES_API_URL"], env["XRIDES_API_KEY"]
    ride = _recent_ride(booking_id)
    # As a client does: a 503 (Kafka did not acknowledge within the API's delivery timeout, while a
    # killed leader's partitions move) is retried after its Retry-After; only a 202 is a promise.
    deadline = time.monotonic() + 90
    while True:
        status, body = _request(f"{api}/v1/rides", key, ride)
        if status != 503 or time.monotonic() > deadline:
            break
        assert body["retriable"] is True, body
        time.sleep(2)
    assert status == 202, body

    def stored() -> Any:
        code, tracked = _request(f"{api}/v1/rides/{booking_id}", key)
        return tracked if code == 200 and tracked["state"] == "stored" else None

    found: dict[str, Any] = _until(f"ride {booking_id} stored", stored, 120)
    return found


def _indexed(env: dict[str, str], booking_id: int) -> bool:
    node = env["XRIDES_ES_URL"].split(",")[0]
    query = json.dumps({"query": {"term": {"booking_id": booking_id}}}).encode()
    request = urllib.request.Request(f"{node}/rides-*/_search", data=query, method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        hits: int = json.loads(response.read())["hits"]["total"]["value"]
    return hits == 1


def test_a_ride_goes_end_to_end_and_a_killed_broker_loses_nothing(
    cluster: tuple[Path, dict[str, str]],
) -> None:
    root, env = cluster
    assert env["XRIDES_PROFILE"] == "cluster" and len(env["XRIDES_KAFKA_BOOTSTRAP"].split(",")) == 3
    first = 3 * 10**12 + int(time.time())
    _post_and_store(env, first)
    # the Flink job was submitted to the session cluster and enriched the ride into Elasticsearch
    _until(f"ride {first} indexed", lambda: _indexed(env, first), 300)

    broker = int((root / "run" / "kafka-2.pid").read_text().split()[0])  # "pid start-time"
    os.kill(broker, signal.SIGKILL)
    second = first + 1
    _post_and_store(env, second)  # acks=all with two of three replicas in sync
    _until(f"ride {second} indexed", lambda: _indexed(env, second), 300)
