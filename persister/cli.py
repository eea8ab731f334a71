"""``python -m persister`` / ``xrides-persister``: run | migrate | replay, or ``--check`` health."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import asyncpg
from kafka import KafkaProducer

from persister.consumer import RideConsumer
from persister.health import Health, start_health_server
from persister.migrate import migrate
from persister.settings import PersisterSettings
from persister.writer import RideWriter
from xrides.health import check_health
from xrides.logs import setup_logging
from xrides.settings import describe, load_settings

log = logging.getLogger("persister")


async def run(settings: PersisterSettings) -> int:
    await migrate(settings.pg_dsn, settings.partitions_ahead_months)
    health = Health()
    runner = await start_health_server(health, settings.metrics_host, settings.metrics_port)
    consumer = RideConsumer(settings, RideWriter(settings.pg_dsn, settings.group_id), health)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Graceful stop: the current batch finishes and commits, then the consumer closes.
        loop.add_signal_handler(sig, consumer.stopping.set)
    try:
        await consumer.run()
    finally:
        await runner.cleanup()
    return 0


async def replay(settings: PersisterSettings, limit: int) -> int:
    """Re-drive dead letters not replayed yet: produce their original bytes to ``rides`` again."""
    conn = await asyncpg.connect(settings.pg_dsn)
    producer = await asyncio.to_thread(KafkaProducer, bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        rows = await conn.fetch(
            "SELECT id, message_key, payload FROM ingest_failures"
            " WHERE replayed_at IS NULL ORDER BY id LIMIT $1",
            limit,
        )
        for row in rows:
            future = producer.send(settings.rides_topic, key=row["message_key"], value=row["payload"])
            await asyncio.to_thread(future.get, 30)
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
