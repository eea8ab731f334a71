"""``python -m archiver`` / ``xrides-archiver``: run | serve | verify | restore, or ``--check`` health.

Exit codes: 0 done; 1 ``verify`` found problems (or a run failed); 2 bad arguments; 3 another run
holds the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from datetime import date
from typing import Any

import orjson

from archiver.archive import Archiver, ArchiverBusy
from archiver.restore import restore
from archiver.settings import ArchiverSettings
from archiver.verify import verify
from xrides.db.migrate import migrate
from xrides.health import RunStatus, check_health, start_status_server
from xrides.logs import setup_logging
from xrides.settings import describe, load_settings

log = logging.getLogger("archiver")


def _print(body: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")


async def run_once(settings: ArchiverSettings, dry_run: bool) -> int:
    await migrate(settings.pg_dsn)
    async with Archiver(settings) as archiver:
        try:
            report = await archiver.run(dry_run=dry_run)
        except ArchiverBusy as exc:
            print(f"archiver: {exc}", file=sys.stderr)
            return 3
    body = report.summary()
    if dry_run:
        body["would_archive"] = [d.isoformat() for d in sorted(set(report.new_days) | set(report.late_days))]
        body["would_delete_indices"] = report.es_indices_deleted
    _print(body)
    return 0


async def serve(settings: ArchiverSettings) -> int:
    """Run every ``interval_s``; ``/healthz`` and ``/metrics`` on the metrics port."""
    await migrate(settings.pg_dsn)
    status = RunStatus(stale_after_s=max(settings.interval_s * 3, 300.0))

    runner = await start_status_server(settings.metrics_host, settings.metrics_port, status)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            try:
                async with Archiver(settings) as archiver:
                    # A stop request lets the day in progress finish (its manifest is the commit point).
                    watcher = asyncio.create_task(stop.wait())
                    watcher.add_done_callback(lambda _: archiver.stopping.set())
                    try:
                        report = await archiver.run()
                    finally:
                        watcher.cancel()
                status.last, status.error = report.summary(), None
            except ArchiverBusy:
                status.error = "another run holds the lock"
            except Exception as exc:  # a failed run is reported; the next interval retries
                log.exception("archive run failed")
                status.error = f"{type(exc).__name__}: {exc}"[:500]
            status.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.interval_s)
    finally:
        await runner.cleanup()
    return 0


async def run_verify(settings: ArchiverSettings, first: date | None, last: date | None) -> int:
    async with Archiver(settings) as archiver:
        report = await verify(archiver, first, last)
    _print(report.summary())
    return 0 if report.ok else 1


async def run_restore(settings: ArchiverSettings, args: argparse.Namespace) -> int:
    await migrate(settings.pg_dsn)
    async with Archiver(settings) as archiver:
        report = await restore(
            archiver, args.first, args.last, args.to_postgres, args.to_elasticsearch, args.dry_run
        )
    _print(report.summary() | {"per_day": [vars_of(d) for d in report.days]})
    return 0


def vars_of(obj: Any) -> dict[str, Any]:
    return {
        k: (v.isoformat() if isinstance(v, date) else v)
        for k, v in ((s, getattr(obj, s)) for s in obj.__slots__)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xrides-archiver", description=__doc__)
    parser.add_argument("command", nargs="?", default="run", choices=("run", "serve", "verify", "restore"))
    parser.add_argument("--check", action="store_true", help="exit 0 if the running `serve` is healthy")
    parser.add_argument("--dry-run", action="store_true", help="run/restore: report, change nothing")
    parser.add_argument("--from", dest="first", type=date.fromisoformat, help="first UTC day (YYYY-MM-DD)")
    parser.add_argument("--to", dest="last", type=date.fromisoformat, help="last UTC day, inclusive")
    parser.add_argument("--to-postgres", action="store_true", help="restore: into PostgreSQL")
    parser.add_argument("--to-elasticsearch", action="store_true", help="restore: into Elasticsearch")
    args = parser.parse_args(argv)
    settings = load_settings(ArchiverSettings)
    if args.check:
        return check_health(settings.metrics_host, settings.metrics_port)
    if args.command == "restore":
        if args.first is None or args.last is None:
            parser.error("restore needs --from and --to")
        if not (args.to_postgres or args.to_elasticsearch):
            parser.error("restore needs --to-postgres and/or --to-elasticsearch")
    setup_logging("xrides-archiver", settings.log_level)
    if args.command == "serve":
        log.info("starting", extra={"settings": describe(settings)})
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(serve(settings))
        return 0
    if args.command == "verify":
        return asyncio.run(run_verify(settings, args.first, args.last))
    if args.command == "restore":
        return asyncio.run(run_restore(settings, args))
    return asyncio.run(run_once(settings, args.dry_run))
