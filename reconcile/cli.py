"""``python -m reconcile`` / ``xrides-reconcile``: run | serve, or ``--check`` health.

``run [--from D --to D] [--json]`` prints the per-day table (or JSON) and the booking ids that
differ; exit 0 when nothing differs, 1 when a gap was found, 2 on bad arguments. ``serve``
reconciles the recent days every ``interval_s`` and every day of the lookback every
``full_interval_s``, and exports the result on ``/metrics`` (``/healthz`` beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from datetime import date

import orjson

from reconcile import metrics
from reconcile.reconciler import Reconciler
from reconcile.report import DayRow, Report
from reconcile.settings import ReconcileSettings
from xrides.db.migrate import migrate
from xrides.health import RunStatus, check_health, start_status_server
from xrides.logs import setup_logging
from xrides.settings import describe, load_settings

log = logging.getLogger("reconcile")


async def run_once(settings: ReconcileSettings, first: date, last: date, as_json: bool) -> int:
    await migrate(settings.pg_dsn)
    async with Reconciler(settings) as reconciler:
        report = await reconciler.run(first, last)
    if as_json:
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(report.table() + "\n")
    return 1 if any(report.gaps().values()) else 0


class Windows:
    """Per-day rows of the latest runs: recent days from the frequent run, older ones from the full."""

    def __init__(self, settings: ReconcileSettings) -> None:
        self.settings = settings
        self.rows: dict[date | None, DayRow] = {}

    def merge(self, report: Report) -> None:
        self.rows = {
            d: r for d, r in self.rows.items() if d is not None and not report.first <= d <= report.last
        }
        self.rows.update(report.rows)

    def publish(self) -> None:
        first, last = self.settings.total_days()
        self.rows = {d: r for d, r in self.rows.items() if d is None or first <= d <= last}
        recent_first, recent_last = self.settings.recent_window()
        metrics.publish(
            {
                "7d": [
                    r for d, r in self.rows.items() if metrics.in_window(d, recent_first, recent_last, False)
                ],
                "total": list(self.rows.values()),
            }
        )


async def serve(settings: ReconcileSettings) -> int:
    await migrate(settings.pg_dsn)
    status = RunStatus(stale_after_s=max(settings.interval_s * 3, 300.0))
    full_at: float | None = None
    windows = Windows(settings)

    runner = await start_status_server(settings.metrics_host, settings.metrics_port, status)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving", extra={"url.port": settings.metrics_port})
    try:
        while not stop.is_set():
            full = full_at is None or time.monotonic() - full_at >= settings.full_interval_s
            scope = "full" if full else "recent"
            first, last = settings.total_days() if full else settings.recent_window()
            started = time.perf_counter()
            try:
                async with Reconciler(settings) as reconciler:
                    report = await reconciler.run(first, last)
            except Exception as exc:  # reported; the next interval retries
                log.exception("reconciliation failed")
                metrics.RUNS.labels(scope, "failed").inc()
                status.error = f"{type(exc).__name__}: {exc}"[:500]
            else:
                seconds = time.perf_counter() - started
                windows.merge(report)
                windows.publish()
                metrics.publish_newest(report.newest)
                metrics.RUNS.labels(scope, "ok").inc()
                metrics.RUN_SECONDS.labels(scope).observe(seconds)
                metrics.LAST_SUCCESS.set(time.time())
                if full:
                    full_at = time.monotonic()
                status.last = {
                    "scope": scope,
                    "first": first.isoformat(),
                    "last": last.isoformat(),
                    "gaps": report.gaps(),
                    "seconds": round(seconds, 3),
                }
                status.error = None
                log.info("reconciled", extra={"reconcile": status.last})
            status.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.interval_s)
    finally:
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xrides-reconcile", description=__doc__)
    parser.add_argument("command", nargs="?", default="run", choices=("run", "serve"))
    parser.add_argument("--check", action="store_true", help="exit 0 if the running `serve` is healthy")
    parser.add_argument(
        "--from", dest="first", type=date.fromisoformat, help="first UTC pickup day (YYYY-MM-DD)"
    )
    parser.add_argument("--to", dest="last", type=date.fromisoformat, help="last UTC pickup day, inclusive")
    parser.add_argument("--json", action="store_true", help="run: print the report as JSON")
    args = parser.parse_args(argv)
    settings = load_settings(ReconcileSettings)
    if args.check:
        return check_health(settings.metrics_host, settings.metrics_port)
    setup_logging("xrides-reconcile", settings.log_level)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)  # a line per request otherwise
    if args.command == "serve":
        log.info("starting", extra={"settings": describe(settings)})
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(serve(settings))
        return 0
    default_first, default_last = settings.total_days()
    first = args.first or min(default_first, args.last or default_first)
    last = args.last or max(default_last, first)
    if first > last:
        parser.error("--from must not be after --to")
    return asyncio.run(run_once(settings, first, last, args.json))
