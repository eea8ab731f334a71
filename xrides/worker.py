"""The one worker loop: poll a batch -> ``Sink.write`` -> dead letters -> commit, for every consumer.

The persister (PostgreSQL) and the indexer (Elasticsearch) are sinks; this loop is everything they
share, written once:

- **Batches.** Up to ``max_records``, or what arrived within ``max_wait_ms`` of the first record.
  The next batch is polled and decoded (``Sink.decode``, in the polling thread) while the sink
  writes the current one, so decoding overlaps the store's work.
- **Crash ordering.** A batch's dead letters are in their topic, acknowledged, before its offsets
  are committed to Kafka, and the sink has applied the batch before either. A crash anywhere
  replays the batch, and sinks are idempotent, so the effect is exactly once. A sink that commits
  offsets with its data (the persister) also says where a newly assigned partition starts
  (``Sink.start_offsets``); Kafka's committed offsets then only serve lag tools.
- **The store down.** ``write`` raises :class:`~xrides.errors.SinkUnavailable`: the batch is kept,
  the partitions are paused (the group membership is kept without fetching), and the write is
  retried with exponential backoff. Messages of a partition a rebalance took away meanwhile are
  dropped from the batch: the new owner starts from the committed offsets.
- **Kafka down.** Polls return nothing until it is back (librdkafka reconnects); a failed offset
  commit is kept and retried with the next batch or the next idle poll, never over a new owner's.
- **Stop.** SIGTERM finishes the batch in hand (write, dead letters, commit), then leaves the group.
- **Health.** Every turn of the loop beats; ``/healthz`` says stalled when it has not turned for
  ``stale_after_s`` (a poll returns at least every ``idle_s``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from xrides.errors import DeliveryAbandoned, SinkUnavailable, XRidesError
from xrides.kafka import DeliveryProducer, OutRecord, Record

log = logging.getLogger("xrides.worker")


class GroupConsumer(Protocol):
    """What the loop asks of its consumer (xrides.kafka.BatchConsumer; a script in unit tests)."""

    def poll_batch(self, max_records: int, max_wait_s: float, idle_s: float = 1.0) -> list[Record]: ...
    def revoked(self, topic: str, partition: int) -> bool: ...
    def owned(self) -> set[tuple[str, int]]: ...
    def commit(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def keep_membership(self) -> None: ...
    def lag(self, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]: ...
    def close(self) -> None: ...


class Positioned(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


T = TypeVar("T", bound=Positioned)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the sink will never apply, with why; it goes to the dead-letter topic as sent."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    reason: str
    label: str = "other"  # a bounded reason for the metric


class Sink(Protocol[T]):
    """Where batches go. ``write`` must be idempotent: a batch may be written twice after a crash."""

    def decode(self, record: Record) -> T:
        """Turn a record into what ``write`` takes (runs in the polling thread, off the loop)."""
        ...

    async def write(self, batch: list[T]) -> list[DeadLetter]:
        """Apply the batch; raise SinkUnavailable to have it retried later, whole."""
        ...

    async def start_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Where newly assigned partitions start; empty: the group's committed offsets."""
        ...

    def health(self) -> dict[str, Any]:
        """Extra fields for ``/healthz``."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LoopSettings:
    max_records: int = 5000
    max_wait_ms: int = 50
    idle_s: float = 1.0
    retry_max_s: float = 5.0
    dlq_topic: str = ""  # empty: the sink never dead-letters
    stale_after_s: float = 60.0


class WorkerMetrics:
    """``xrides_<component>_*``: batch size and time, lag, last commit, retries, dead letters."""

    def __init__(
        self, component: str, retries_name: str = "sink_retries_total", registry: CollectorRegistry = REGISTRY
    ) -> None:
        p = f"xrides_{component}_"
        r = registry
        self.batch_rows = Histogram(
            p + "batch_rows",
            "Messages per written batch",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )
        self.batch_seconds = Histogram(
            p + "batch_seconds",
            "Time to apply one batch to the sink",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.lag = Gauge(
            p + "consumer_lag_messages", "Messages behind the partition's end", ["partition"], registry=r
        )
        self.last_commit = Gauge(
            p + "last_commit_timestamp_seconds", "Unix time of the last applied batch", registry=r
        )
        self.retries = Counter(
            p + retries_name, "Batch writes retried because the sink's store failed", registry=r
        )
        self.dead_letters = Counter(
            p + "dead_letters_total", "Messages dead-lettered, by reason", ["reason"], registry=r
        )


@dataclass
class Beat:
    """The loop's heartbeat, read by ``/healthz``."""

    stale_after_s: float = 60.0
    at: float = field(default_factory=time.monotonic)

    def __call__(self) -> None:
        self.at = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.at < self.stale_after_s


class Worker(Generic[T]):
    def __init__(
        self,
        consumer_factory: Callable[[Callable[[str, list[int]], dict[int, int]]], GroupConsumer],
        sink: Sink[T],
        settings: LoopSettings,
        metrics: WorkerMetrics,
        dead_letters: DeliveryProducer | None = None,
    ) -> None:
        """``consumer_factory`` builds the group member, given the function that tells it where
        assigned partitions start (it calls the sink's ``start_offsets`` on this loop)."""
        self.sink = sink
        self.settings = settings
        self.metrics = metrics
        self.dead_letters = dead_letters
        self.beat = Beat(settings.stale_after_s)
        self.stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._unmirrored: dict[tuple[str, int], int] = {}  # applied, not yet committed to Kafka
        self._commit_lock = threading.Lock()  # the polling thread retries commits too
        self.consumer = consumer_factory(self._start_offsets)

    def _start_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Called by the consumer inside a poll (a worker thread): ask the sink on the loop."""
        future = asyncio.run_coroutine_threadsafe(self.sink.start_offsets(topic, partitions), self._loop)
        return future.result(timeout=30)

    def health(self) -> tuple[dict[str, Any], bool]:
        ok = self.beat.alive()
        return {"status": "ok" if ok else "stalled", **self.sink.health()}, ok

    def _next_batch(self) -> list[T]:
        """Poll and decode (in a worker thread, overlapping the previous write)."""
        s = self.settings
        records = self.consumer.poll_batch(s.max_records, s.max_wait_ms / 1000, s.idle_s)
        if not records and self._unmirrored:  # idle: retry an offset commit that failed
            self._commit({})
        # A rebalance within one poll can hand a partition back and replay some of its records.
        unique = {(r.topic, r.partition, r.offset): r for r in records}
        return [self.sink.decode(r) for r in unique.values()]

    def _commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        with self._commit_lock:
            self._commit_locked(next_offsets)

    def _commit_locked(self, next_offsets: dict[tuple[str, int], int]) -> None:
        for tp, offset in next_offsets.items():
            self._unmirrored[tp] = max(offset, self._unmirrored.get(tp, 0))
        if not self._unmirrored:
            return
        owned = self.consumer.owned()
        pending = {tp: o for tp, o in self._unmirrored.items() if tp in owned}
        try:
            self.consumer.commit(pending)
        except XRidesError as exc:
            self._unmirrored = pending
            log.warning("offset commit failed; retried later", extra={"error.message": exc.message[:200]})
            return
        self._unmirrored = {}

    def _record_lag(self, next_offsets: dict[tuple[str, int], int]) -> None:
        for (_, partition), lag in self.consumer.lag(next_offsets).items():
            self.metrics.lag.labels(str(partition)).set(lag)

    def _deliver(self, dead: list[DeadLetter]) -> None:
        assert self.dead_letters is not None, "a sink dead-lettered without a dead-letter producer"
        records = [
            OutRecord(
                self.settings.dlq_topic,
                d.value,
                d.key,
                [
                    ("reason", d.reason[:1000].encode()),
                    ("source-topic", d.topic.encode()),
                    ("source-partition", str(d.partition).encode()),
                    ("source-offset", str(d.offset).encode()),
                ],
            )
            for d in dead
        ]
        self.dead_letters.deliver_all(records, self._stop_requested)

    def _stop_requested(self, seconds: float) -> bool:
        time.sleep(seconds)
        return self.stopping.is_set()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(fn)

    async def _write(self, batch: list[T]) -> None:
        """Apply one batch, retrying while the store is down; then dead letters, then commit."""
        delay = 0.1
        paused = False
        while True:
            batch = [m for m in batch if not self.consumer.revoked(m.topic, m.partition)]
            if not batch:
                break
            started = time.perf_counter()
            try:
                dead = await self.sink.write(batch)
            except SinkUnavailable as exc:
                self.metrics.retries.inc()
                log.warning(
                    "sink unavailable; retrying the batch",
                    extra={"error.message": exc.message[:200], "retry.delay_s": delay},
                )
                if not paused:
                    await self._call(self.consumer.pause)
                    paused = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)
                await self._call(self.consumer.keep_membership)
                self.beat()
                continue
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_rows.observe(len(batch))
            self.metrics.last_commit.set(time.time())
            if dead:
                await self._call(functools.partial(self._deliver, dead))
                for d in dead:
                    self.metrics.dead_letters.labels(d.label).inc()
                    log.warning(
                        "dead-lettered",
                        extra={
                            "kafka.topic": d.topic,
                            "kafka.partition": d.partition,
                            "kafka.offset": d.offset,
                            "error.message": d.reason[:300],
                        },
                    )
            next_offsets: dict[tuple[str, int], int] = {}
            for m in batch:
                tp = (m.topic, m.partition)
                next_offsets[tp] = max(next_offsets.get(tp, 0), m.offset + 1)
            await self._call(functools.partial(self._commit, next_offsets))
            await self._call(functools.partial(self._record_lag, next_offsets))
            break
        if paused:
            await self._call(self.consumer.resume)

    async def run(self) -> None:
        try:
            upcoming = asyncio.create_task(asyncio.to_thread(self._next_batch))
            while True:
                batch = await upcoming
                self.beat()
                if self.stopping.is_set():
                    await self._write(batch)  # graceful stop: finish this batch
                    break
                upcoming = asyncio.create_task(asyncio.to_thread(self._next_batch))
                if batch:
                    await self._write(batch)
        except DeliveryAbandoned as exc:  # stopped with Kafka away: the batch replays after a restart
            log.warning("stopped before the batch was settled", extra={"error.message": exc.message})
        finally:
            await asyncio.to_thread(self.consumer.close)
            if self.dead_letters is not None:
                await asyncio.to_thread(self.dead_letters.close, 5)
            await self.sink.close()
            log.info("stopped")
