"""``python -m persister`` / ``xrides-persister``: run | migrate | replay (dead letters) |
quarantine replay (refused rides, after a contract change), or ``--check`` health."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg
import orjson

from persister.settings import PersisterSettings
from persister.sink import PostgresSink
from persister.writer import Message, RideWriter
from xrides.db import migrate
from xrides.health import check_health, start_status_server
from xrides.kafka import BatchConsumer, DeliveryProducer, KafkaConfig, OutRecord
from xrides.logs import setup_logging
from xrides.quarantine import replay
from xrides.request_ids import Position
from xrides.settings import describe, load_settings
from xrides.worker import LoopSettings, Worker, WorkerMetrics

log = logging.getLogger("persister")


def build_worker(settings: PersisterSettings) -> Worker[Message]:
    """The worker loop around the PostgreSQL sink (call inside the event loop)."""
    s = settings
    kafka = KafkaConfig(s.kafka_bootstrap, "xrides-persister")
    loop_settings = LoopSettings(
        max_records=s.batch_max_rows,
        max_wait_ms=s.batch_max_wait_ms,
        retry_max_s=s.retry_max_s,
        dlq_topic=s.dlq_topic,
    )
    return Worker(
        lambda start_offsets: BatchConsumer(
            kafka, s.group_id, [s.rides_topic, s.refused_topic], start_offsets
        ),
        PostgresSink(RideWriter(s.pg_dsn, s.group_id), s.refused_topic),
        loop_settings,
        METRICS,
        DeliveryProducer(kafka),
    )


# The persister's metric names predate the shared loop; the retry counter keeps its name.
METRICS = WorkerMetrics("persister", retries_name="db_retries_total")


async def run(settings: PersisterSettings) -> int:
    await migrate(settings.pg_dsn, settings.partitions_ahead_months)
    worker = build_worker(settings)
    runner = await start_status_server(settings.metrics_host, settings.metrics_port, worker.health)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Graceful stop: the current batch finishes and commits, then the consumer closes.
        loop.add_signal_handler(sig, worker.stopping.set)
    try:
        await worker.run()
    finally:
        await runner.cleanup()
    return 0


async def replay_dead_letters(settings: PersisterSettings, limit: int) -> int:
    """Re-drive dead letters not replayed yet: produce their original bytes to ``rides`` again."""
    conn = await asyncpg.connect(settings.pg_dsn)
    producer = DeliveryProducer(KafkaConfig(settings.kafka_bootstrap, "xrides-persister-replay"))
    try:
        rows = await conn.fetch(
            "SELECT id, message_key, payload FROM ingest_failures"
            " WHERE replayed_at IS NULL ORDER BY id LIMIT $1",
            limit,
        )
        for row in rows:
            record = OutRecord(settings.rides_topic, row["payload"], row["message_key"])
            await asyncio.to_thread(producer.deliver_all, [record], time.sleep)
            await conn.execute("UPDATE ingest_failures SET replayed_at = now() WHERE id = $1", row["id"])
        print(f"replayed {len(rows)} dead letters to {settings.rides_topic}")
        return 0
    finally:
        await asyncio.to_thread(producer.close, 5)
        await conn.close()


async def quarantine_replay(settings: PersisterSettings, since: datetime, until: datetime, dry_run: bool,
                            limit: int) -> int:  # fmt: skip
    """Re-validate quarantined rides under the current contract; store the ones that now pass."""
    conn = await asyncpg.connect(settings.pg_dsn)
    producer = DeliveryProducer(KafkaConfig(settings.kafka_bootstrap, "xrides-quarantine-replay"))

    async def send(messages: Sequence[tuple[bytes, bytes]]) -> list[Position]:
        records = [OutRecord(settings.rides_topic, value, key) for key, value in messages]
        return await asyncio.to_thread(producer.send_all, records)

    try:
        report = await replay(conn, send, since, until, ZoneInfo(settings.local_zone), dry_run, limit)
    finally:
        await asyncio.to_thread(producer.close, 5)
        await conn.close()
    print(orjson.dumps(report.as_dict()).decode())  # one line: the last of the output
    return 0


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xrides-persister", description=__doc__)
    parser.add_argument(
        "command", nargs="?", default="run", choices=("run", "migrate", "replay", "quarantine")
    )
    parser.add_argument("action", nargs="?", choices=("replay",), help="quarantine: replay")
    parser.add_argument("--check", action="store_true", help="exit 0 if the running persister is healthy")
    parser.add_argument("--limit", type=int, default=10_000, help="replays: at most this many rows")
    parser.add_argument("--since", type=_instant, help="quarantine replay: refused at or after (ISO 8601)")
    parser.add_argument("--until", type=_instant, help="quarantine replay: refused before (default now)")
    parser.add_argument("--dry-run", action="store_true", help="quarantine replay: count, change nothing")
    args = parser.parse_args(argv)
    settings = load_settings(PersisterSettings)
    if args.check:
        return check_health(settings.metrics_host, settings.metrics_port)
    setup_logging("xrides-persister", settings.log_level)
    if args.command == "migrate":
        applied = asyncio.run(
            migrate(settings.pg_dsn, settings.partitions_ahead_months, settings.role_passwords())
        )
        print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
        return 0
    if args.command == "replay":
        return asyncio.run(replay_dead_letters(settings, args.limit))
    if args.command == "quarantine":
        if args.action != "replay" or args.since is None:
            parser.error("usage: quarantine replay --since ISO [--until ISO] [--dry-run]")
        until = args.until or datetime.now(UTC)
        return asyncio.run(quarantine_replay(settings, args.since, until, args.dry_run, args.limit))
    log.info("starting", extra={"settings": describe(settings)})
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(settings))
    return 0
