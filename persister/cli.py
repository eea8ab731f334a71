"""``python -m persister`` / ``xrides-persister``: run | migrate | replay, or ``--check`` health."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time

import asyncpg

from persister.settings import PersisterSettings
from persister.sink import PostgresSink
from persister.writer import Message, RideWriter
from xrides.db import migrate
from xrides.health import check_health, start_status_server
from xrides.kafka import BatchConsumer, DeliveryProducer, KafkaConfig, OutRecord
from xrides.logs import setup_logging
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
        lambda start_offsets: BatchConsumer(kafka, s.group_id, [s.rides_topic], start_offsets),
        PostgresSink(RideWriter(s.pg_dsn, s.group_id)),
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


async def replay(settings: PersisterSettings, limit: int) -> int:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xrides-persister", description=__doc__)
    parser.add_argument("command", nargs="?", default="run", choices=("run", "migrate", "replay"))
    parser.add_argument("--check", action="store_true", help="exit 0 if the running persister is healthy")
    parser.add_argument("--limit", type=int, default=10_000, help="replay: at most this many dead letters")
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
        return asyncio.run(replay(settings, args.limit))
    log.info("starting", extra={"settings": describe(settings)})
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(settings))
    return 0
