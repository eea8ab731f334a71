"""CPU and memory of every process of the stack, sampled from /proc while a scenario runs.

The launcher leaves one pid file per service and platform process in ``.stack/run``; a process's
children (Elasticsearch's controller, PyFlink's Python workers, PostgreSQL's backends) are added to
its parent's figures, so "postgres" is the whole database server, not its postmaster alone.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.stack.processes import live_pid

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def read_pids(run_dir: Path) -> dict[str, int]:
    """``name -> pid`` for every live process with a pid file (the launcher's own liveness check)."""
    pids = {pid_file.stem: live_pid(pid_file) for pid_file in sorted(run_dir.glob("*.pid"))}
    return {name: pid for name, pid in pids.items() if pid is not None}


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime ticks, rss pages) from /proc/<pid>/stat, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces: split after the last ')'
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21])


def process_tree_usage(roots: dict[str, int]) -> dict[str, tuple[float, int]]:
    """``name -> (cpu seconds, rss bytes)`` of each root pid plus all of its descendants."""
    stats: dict[int, tuple[int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            stats[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    usage = {}
    for name, root in roots.items():
        if root not in stats:
            continue
        ticks = rss = 0
        pending = [root]
        while pending:
            pid = pending.pop()
            _, cpu, pages = stats[pid]
            ticks += cpu
            rss += pages
            pending.extend(children.get(pid, ()))
        usage[name] = (ticks / CLOCK_TICKS, rss * PAGE_BYTES)
    return usage


@dataclass
class ProcessFigures:
    cpu_percent_mean: float  # of one core: 200 means both cores of this machine
    cpu_percent_max: float
    rss_mb_max: float


@dataclass
class Sampler:
    """Samples every ``interval`` seconds in a thread between ``start()`` and ``stop()``."""

    run_dir: Path
    interval: float = 1.0
    extra: dict[str, int] = field(default_factory=dict)  # e.g. the load generator itself
    _samples: list[tuple[float, dict[str, tuple[float, int]]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _roots(self) -> dict[str, int]:
        return {**read_pids(self.run_dir), **self.extra}

    def start(self) -> None:
        self._samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="procstat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self._samples.append((time.monotonic(), process_tree_usage(self._roots())))
            if self._stop.wait(self.interval):
                return

    def stop(self) -> dict[str, ProcessFigures]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return summarise(self._samples)


def summarise(samples: list[tuple[float, dict[str, tuple[float, int]]]]) -> dict[str, ProcessFigures]:
    """Per-process mean and peak CPU (from consecutive samples) and peak resident memory."""
    figures = {}
    names = {name for _, usage in samples for name in usage}
    for name in sorted(names):
        points = [(t, usage[name]) for t, usage in samples if name in usage]
        rates = [
            100 * (b[0] - a[0]) / (tb - ta)
            for (ta, a), (tb, b) in itertools.pairwise(points)
            if tb > ta and b[0] >= a[0]  # a restarted process resets its counters
        ]
        span = points[-1][0] - points[0][0] if len(points) > 1 else 0.0
        used = points[-1][1][0] - points[0][1][0] if len(points) > 1 else 0.0
        figures[name] = ProcessFigures(
            cpu_percent_mean=round(100 * used / span, 1) if span > 0 and used >= 0 else 0.0,
            cpu_percent_max=round(max(rates), 1) if rates else 0.0,
            rss_mb_max=round(max(u[1] for _, u in points) / 2**20, 1),
        )
    return figures
