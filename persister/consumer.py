"""The Kafka side: poll a bounded batch, hand it to the writer, then commit.

Threading: kafka-python is blocking, so every consumer call runs in a worker thread
(``asyncio.to_thread``) under one lock (the consumer is not thread-safe); the asyncio side owns
PostgreSQL. The next batch is polled and decoded in a thread while the current one is written, so
decoding overlaps the database's work. Rebalance callbacks run inside ``poll`` and read offsets
through the loop (``run_coroutine_threadsafe``) on a connection of their own.

Ordering that makes a crash harmless: poll -> write rows, receipts and offsets in one PostgreSQL
transaction -> commit the same offsets to Kafka (for lag tools) -> poll again. On assignment the
consumer seeks to the offsets PostgreSQL holds, so Kafka's committed offsets are only a fallback,
and a batch replayed after a crash is absorbed by the idempotent writes.

PostgreSQL down: the batch is kept, partitions are paused (so ``poll`` keeps the group membership
without fetching), and the write is retried with exponential backoff. If a rebalance takes a
partition away meanwhile, its messages are dropped from the pending batch: the new owner starts
from the offsets in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from persister.health import Health
from persister.metrics import BATCH_ROWS, BATCH_SECONDS, CONSUMER_LAG, DB_RETRIES, DEAD_LETTERS, LAST_COMMIT
from persister.settings import PersisterSettings
from persister.writer import Message, RideWriter, stage_row
from xrides.delivery import Record, deliver_all
from xrides.ride import RideValidationError, decode_envelope

log = logging.getLogger("persister.consumer")

T = TypeVar("T")

# Errors that mean "PostgreSQL is not there right now" (or a transient conflict with another
# persister during a rebalance): keep the batch, reconnect, retry. Data errors never get here:
# the writer isolates refused rows itself.
RETRIABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection the server dropped mid-operation
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # shutdown, cannot connect now, query cancelled
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.TransactionRollbackError,  # deadlock or serialization failure with another persister
)


def decode(record: Any) -> Message:
    message = Message(record.topic, record.partition, record.offset, record.key, record.value or b"")
    try:
        message.envelope = decode_envelope(message.value)
        message.row = stage_row(message)
    except RideValidationError as exc:
        message.error = f"invalid ride: {exc.message}"[:1000]
    except (ValueError, TypeError) as exc:
        message.error = f"undecodable message: {exc}"[:1000]
    return message


def reason_label(error: str) -> str:
    """A bounded label for the dead-letter counter."""
    for prefix, label in (
        ("invalid ride", "invalid_ride"),
        ("undecodable", "undecodable"),
        ("refused", "db_refused"),
    ):
        if error.startswith(prefix):
            return label
    return "other"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: RideConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.owner.revoked |= {tp.partition for tp in revoked}
        log.info("partitions revoked", extra={"kafka.partitions": sorted(tp.partition for tp in revoked)})

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        owner = self.owner
        partitions = sorted(tp.partition for tp in assigned)
        owner.revoked -= set(partitions)
        future = asyncio.run_coroutine_threadsafe(
            owner.writer.stored_offsets(owner.settings.rides_topic, partitions), owner.loop
        )
        try:
            stored = future.result(timeout=30)
        except Exception as exc:  # PostgreSQL down: Kafka's committed offsets (at most a batch behind)
            log.warning("offsets not read from PostgreSQL", extra={"error.message": str(exc)[:200]})
            stored = {}
        for tp in assigned:
            if tp.partition in stored:
                owner.consumer.seek(tp, stored[tp.partition])
        log.info("partitions assigned", extra={"kafka.partitions": partitions, "kafka.offsets": stored})


class RideConsumer:
    def __init__(self, settings: PersisterSettings, writer: RideWriter, health: Health) -> None:
        self.settings = settings
        self.writer = writer
        self.health = health
        self.revoked: set[int] = set()
        self.stopping = asyncio.Event()
        self._lock = threading.Lock()
        self._unmirrored: dict[int, int] = {}  # offsets stored in PostgreSQL, not yet in Kafka
        self._kafka_down_since: float | None = None
        self._kafka_retry_s = 0.05
        self.loop = asyncio.get_running_loop()
        s = settings
        self.consumer = KafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.group_id,
            client_id="xrides-persister",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.batch_max_rows,
            fetch_max_wait_ms=max(10, s.batch_max_wait_ms),
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            # A killed persister's partitions move to the others (or to its restarted self) once its
            # session expires: 10 s instead of the default 45 s (the fault suite measured 42 s to
            # recover). The heartbeat thread keeps a live one in the group while a batch is written.
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
        )
        self.consumer.subscribe([s.rides_topic], listener=_Rebalance(self))
        self.dlq = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=5)

    async def _locked(self, fn: Callable[[], T]) -> T:
        """Run a consumer call in a worker thread, never two at once."""

        def call() -> T:
            with self._lock:
                return fn()

        return await asyncio.to_thread(call)

    def _next_batch(self) -> list[Message]:
        """Poll a batch and decode it (runs in a worker thread, overlapping the previous write)."""
        with self._lock:
            records = self._collect()
            if not records and self._unmirrored:  # idle: retry a Kafka offset commit that failed
                self._commit_kafka({})
        # A rebalance inside one collection can hand back a partition and replay some of its
        # records: keep one message per position.
        unique = {(r.partition, r.offset): r for r in records}
        return [decode(r) for r in unique.values()]

    def _collect(self) -> list[Any]:
        """Poll until the batch is full or ``batch_max_wait_ms`` passed since its first record."""
        s = self.settings
        records: list[Any] = []
        deadline: float | None = None
        idle_until = time.monotonic() + 1.0
        while len(records) < s.batch_max_rows:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if deadline is None and now >= idle_until:
                break  # nothing for a second: return so the loop can notice a stop request
            wait = (deadline - now) if deadline is not None else (idle_until - now)
            try:
                polled = self.consumer.poll(
                    timeout_ms=max(1, int(wait * 1000)), max_records=s.batch_max_rows - len(records)
                )
            except KafkaError as exc:
                if records:
                    break  # already polled: their positions have moved on, write them first
                self._kafka_unavailable(exc)
                time.sleep(min(wait, self._kafka_retry_s))
                continue
            self._kafka_available()
            for batch in polled.values():
                records.extend(batch)
            if records and deadline is None:
                deadline = time.monotonic() + s.batch_max_wait_ms / 1000
        return records

    def _kafka_unavailable(self, exc: KafkaError) -> None:
        """A broker outage that escaped ``poll`` (kafka-python raises the coordinator lookup's
        connection error from it). The consumer stays usable: the caller waits and polls again.
        Before, the error ended the process and its rides waited for a restart (the fault suite's
        kill-kafka scenario found it, once in six runs)."""
        if self._kafka_down_since is None:
            self._kafka_down_since = time.monotonic()
            log.warning("Kafka unavailable; polling again", extra={"error.message": str(exc)[:200]})
        self._kafka_retry_s = min(self._kafka_retry_s * 2, 1.0)

    def _keep_membership(self) -> None:
        """``poll(0)`` on paused partitions: keeps the group membership, may rebalance."""
        try:
            self.consumer.poll(0)
        except KafkaError as exc:  # Kafka away too: the next retry polls again
            self._kafka_unavailable(exc)
        else:
            self._kafka_available()

    def _kafka_available(self) -> None:
        self._kafka_retry_s = 0.05
        if self._kafka_down_since is not None:
            down = time.monotonic() - self._kafka_down_since
            self._kafka_down_since = None
            log.info("Kafka available again", extra={"event.duration_s": round(down, 1)})

    def _commit_kafka(self, next_offsets: dict[int, int]) -> None:
        """Mirror PostgreSQL's committed offsets into Kafka's group offsets (for lag tools).

        PostgreSQL holds the truth (a restarted persister seeks to its stored offsets), so a failed
        commit here only delays what lag tools see. It is kept and retried with the next batch or
        the next idle poll, so a partition that goes quiet right after a broker restart does not
        show a stale lag forever. Offsets of partitions no longer assigned are dropped, never
        committed over their new owner's.
        """
        topic = self.settings.rides_topic
        for partition, offset in next_offsets.items():
            self._unmirrored[partition] = max(offset, self._unmirrored.get(partition, 0))
        owned = {tp.partition for tp in self.consumer.assignment()}
        pending = {p: o for p, o in self._unmirrored.items() if p in owned}
        self._unmirrored = pending
        if not pending:
            return
        offsets = {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in pending.items()}
        try:
            self.consumer.commit(offsets)
        except Exception as exc:
            log.warning("kafka offset commit failed; retried later", extra={"error.message": str(exc)[:200]})
            return
        self._unmirrored = {}

    def _update_lag(self, next_offsets: dict[int, int]) -> None:
        topic = self.settings.rides_topic
        owned = {tp.partition for tp in self.consumer.assignment()}
        for partition, offset in next_offsets.items():
            if partition not in owned:  # a rebalance moved it while the batch was written
                continue
            highwater = self.consumer.highwater(TopicPartition(topic, partition))
            if highwater is not None:
                CONSUMER_LAG.labels(str(partition)).set(max(0, highwater - offset))

    def _dead_letter(self, failed: list[Message]) -> None:
        """Into the dead-letter topic, however long the broker is away: PostgreSQL has already
        committed the offsets past these records (and their ``ingest_failures`` rows)."""
        records = [
            Record(
                self.settings.dlq_topic,
                key=message.key,
                value=message.value,
                headers=[
                    ("reason", (message.error or "")[:1000].encode()),
                    ("source-topic", message.topic.encode()),
                    ("source-partition", str(message.partition).encode()),
                    ("source-offset", str(message.offset).encode()),
                ],
            )
            for message in failed
        ]
        deliver_all(self.dlq, records, time.sleep)
        for message in failed:
            DEAD_LETTERS.labels(reason_label(message.error or "")).inc()

    async def _write_with_retry(self, messages: list[Message]) -> None:
        delay = 0.1
        paused = False
        while True:
            messages = [m for m in messages if m.partition not in self.revoked]
            if not messages:
                break
            next_offsets: dict[int, int] = {}
            for m in messages:
                next_offsets[m.partition] = max(next_offsets.get(m.partition, 0), m.offset + 1)
            started = time.perf_counter()
            try:
                result = await self.writer.write(self.settings.rides_topic, messages, next_offsets)
            except RETRIABLE as exc:
                DB_RETRIES.inc()
                self.health.db_ok = False
                await self.writer.close()
                log.warning(
                    "PostgreSQL unavailable; retrying the batch",
                    extra={"error.message": str(exc)[:200], "retry.delay_s": delay},
                )
                if not paused:
                    await self._locked(lambda: self.consumer.pause(*self.consumer.assignment()))
                    paused = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)
                await self._locked(self._keep_membership)
                self.health.beat()
                continue
            self.health.db_ok = True
            BATCH_SECONDS.observe(time.perf_counter() - started)
            BATCH_ROWS.observe(len(messages))
            LAST_COMMIT.set(time.time())
            if result.failed:
                await asyncio.to_thread(self._dead_letter, result.failed)
                for m in result.failed:
                    log.warning(
                        "dead-lettered",
                        extra={
                            "kafka.partition": m.partition,
                            "kafka.offset": m.offset,
                            "booking_id": m.booking_id,
                            "error.message": m.error,
                        },
                    )
            await self._locked(functools.partial(self._commit_kafka, next_offsets))
            await self._locked(functools.partial(self._update_lag, next_offsets))
            break
        if paused:
            await self._locked(lambda: self.consumer.resume(*self.consumer.paused()))

    async def run(self) -> None:
        log.info(
            "consuming",
            extra={"kafka.topic": self.settings.rides_topic, "kafka.group": self.settings.group_id},
        )
        try:
            upcoming = asyncio.create_task(asyncio.to_thread(self._next_batch))
            while True:
                messages = await upcoming
                self.health.beat()
                if self.stopping.is_set():
                    await self._write_with_retry(messages)  # graceful stop: finish this batch
                    break
                upcoming = asyncio.create_task(asyncio.to_thread(self._next_batch))
                if messages:
                    await self._write_with_retry(messages)
        finally:
            await self._locked(lambda: self.consumer.close(autocommit=False))
            await asyncio.to_thread(self.dlq.close, 5)
            await self.writer.close()
            log.info("stopped")
