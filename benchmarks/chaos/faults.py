"""Faults injected into the running local stack: SIGKILL and restart, a paused process.

Every part runs in its own session (the launcher's ``start_new_session``), so its process group is
its pid: SIGKILL to the group takes children with it (the Flink job's JVM, Elasticsearch's
controller), as a machine losing the process would. Restarts go through the launcher's own
``up --only``, the same path an operator (or ``make up``) takes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from deploy.stack.kafkawire import fetch_metadata
from deploy.stack.processes import live_pid
from xrides.ride import example_ride
from xrides.topics import RIDES

REPO = Path(__file__).resolve().parents[2]


def stack_dir(env: dict[str, str]) -> Path:
    """The stack the faults strike: ``XRIDES_STACK_DIR``, else the repo's ``.stack``."""
    return Path(env.get("XRIDES_STACK_DIR") or REPO / ".stack")


def kafka_leader(bootstrap: str) -> str:
    """The launcher's name of the broker leading most partitions of ``rides`` (node id n is kafka-n).

    Asked over the wire with the launcher's own Metadata request: a librdkafka admin client made
    and dropped just before its broker is killed once crashed the whole process (a segfault in
    its background thread)."""
    host, _, port = bootstrap.split(",", maxsplit=1)[0].rpartition(":")
    leaders = fetch_metadata(host, int(port), all_topics=True).leaders[RIDES.name]
    node, _ = collections.Counter(leaders.values()).most_common(1)[0]
    return f"kafka-{node}"


async def flink_job(rest_url: str) -> dict[str, Any]:
    """The session cluster's rides job after a scenario: its id, state, restarts, and the
    checkpoint it was restored from (empty without a cluster)."""
    if not rest_url:
        return {}
    async with aiohttp.ClientSession(base_url=rest_url) as http:
        async with http.get("/jobs/overview") as response:
            jobs = (await response.json()).get("jobs", [])
        running = [j for j in jobs if j["state"] == "RUNNING"]
        if not running:
            return {"state": ",".join(j["state"] for j in jobs) or "none"}
        jid = running[0]["jid"]
        async with http.get(f"/jobs/{jid}/checkpoints") as response:
            checkpoints = await response.json()
    restored = (checkpoints.get("latest") or {}).get("restored") or {}
    return {
        "job": jid,
        "state": "RUNNING",
        "runs_on_cluster": len(jobs),
        "restored_from": restored.get("external_path"),
        "completed_checkpoints": checkpoints.get("counts", {}).get("completed"),
    }


class ReadProbe:
    """Tracking reads through the fault: ``GET /v1/requests/<id>`` of a ride stored before it, twice
    a second. With a streaming replica, a replica lost must cost no answer (reads fall back)."""

    def __init__(self, api_url: str, api_key: str) -> None:
        self.api_url = api_url
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.outcomes: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Post one ride of the probe's own (a booking id no generator uses) and poll its status."""
        ride = {**example_ride(), "booking_id": int(time.time() * 1e6)}
        async with (
            aiohttp.ClientSession(headers=self.headers) as http,
            http.post(f"{self.api_url}/v1/rides", json=ride) as response,
        ):
            body = await response.json()
            if response.status != 202:
                raise RuntimeError(f"the read probe's ride was refused: {response.status} {body}")
        self._task = asyncio.create_task(self._poll(body["request_id"]))

    async def _poll(self, request_id: str) -> None:
        url = f"{self.api_url}/v1/requests/{request_id}"
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(headers=self.headers, timeout=timeout) as http:
            while not self._stop.is_set():
                try:
                    async with http.get(url) as response:
                        await response.read()
                        self.outcomes.append((time.time(), response.status))
                except (aiohttp.ClientError, TimeoutError):
                    self.outcomes.append((time.time(), 0))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.5)

    async def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._task is not None:
            await self._task
        failed = sum(1 for _, status in self.outcomes if status != 200)
        return {"reads": len(self.outcomes), "failed": failed}


def pid_of(run_dir: Path, name: str) -> int | None:
    """The part's pid if the process the launcher recorded still runs (the launcher's own check)."""
    return live_pid(run_dir / f"{name}.pid")


def running(run_dir: Path) -> dict[str, int]:
    """Every part the launcher started that still runs: name -> pid."""
    found = {path.stem: pid_of(run_dir, path.stem) for path in sorted(run_dir.glob("*.pid"))}
    return {name: pid for name, pid in found.items() if pid is not None}


def crashed(before: dict[str, int], after: dict[str, int], struck: tuple[str, ...]) -> list[str]:
    """Parts that were running before the fault and died (or were replaced) without being struck:
    a fault elsewhere must never take them down. The next scenario's ``heal`` would restart them
    and hide it, so it is checked here."""
    return sorted(name for name, pid in before.items() if name not in struck and after.get(name) != pid)


def kill(run_dir: Path, name: str) -> int:
    """SIGKILL the part's whole process group; the pid that was killed."""
    pid = pid_of(run_dir, name)
    if pid is None:
        raise RuntimeError(f"{name} is not running: nothing to kill")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return pid


def pause(run_dir: Path, name: str, resume: bool = False) -> None:
    """SIGSTOP (or SIGCONT) the part's process group: a stall, not a crash (connections stay open)."""
    pid = pid_of(run_dir, name)
    if pid is None:
        raise RuntimeError(f"{name} is not running: nothing to pause")
    os.killpg(pid, signal.SIGCONT if resume else signal.SIGSTOP)


async def restart(names: list[str], env: dict[str, str]) -> None:
    """``python -m deploy.stack up --only <names>``: starts what is not healthy, waits for health."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy.stack", "up", "--only", ",".join(names),
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"restart of {names} failed: {out.decode()[-1500:]}")


async def heal(env: dict[str, str]) -> list[str]:
    """Bring every part back (``up``); the names that were not healthy before."""
    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deploy.stack", "status", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await status.communicate()
    rows = [line.split() for line in out.decode().splitlines() if len(line.split()) >= 4]
    unhealthy = [row[0] for row in rows if row[3] != "healthy"]
    if unhealthy:
        await restart(unhealthy, env)
    return unhealthy
