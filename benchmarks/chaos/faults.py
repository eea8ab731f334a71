"""Faults injected into the running local stack: SIGKILL and restart, a paused process.

Every part runs in its own session (the launcher's ``start_new_session``), so its process group is
its pid: SIGKILL to the group takes children with it (the Flink job's JVM, Elasticsearch's
controller), as a machine losing the process would. Restarts go through the launcher's own
``up --only``, the same path an operator (or ``make up``) takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from deploy.stack.processes import live_pid

REPO = Path(__file__).resolve().parents[2]


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
