"""The one worker loop (xrides/worker.py) against a scripted consumer and sink: retries while the
store is down, dead letters before commits, revoked partitions dropped, failed commits retried,
a graceful stop, and the dead-letter producer's resend-until-acknowledged (the fault suite's
kill-kafka scenario once found a consumer dead after a broker restart, and a dead letter lost)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from benchmarks.chaos.faults import crashed
from xrides.errors import BrokerUnavailable, DeliveryAbandoned, SinkUnavailable, XRidesError
from xrides.kafka import DeliveryProducer, KafkaConfig, OutRecord, Record
from xrides.worker import DeadLetter, LoopSettings, Worker, WorkerMetrics


@dataclass(frozen=True)
class Item:
    topic: str
    partition: int
    offset: int
    value: bytes


class ScriptedConsumer:
    """Hands out scripted batches; records what the loop asked of it, in order."""

    def __init__(self, batches: list[list[Record]], events: list[str]) -> None:
        self.batches = batches
        self.events = events
        self.revoked_partitions: set[int] = set()
        self.commit_failures = 0
        self.committed: dict[tuple[str, int], int] = {}

    def poll_batch(self, max_records: int, max_wait_s: float, idle_s: float = 1.0) -> list[Record]:
        return self.batches.pop(0) if self.batches else []

    def revoked(self, topic: str, partition: int) -> bool:
        return partition in self.revoked_partitions

    def owned(self) -> set[tuple[str, int]]:
        return {("rides", p) for p in range(6)} - {("rides", p) for p in self.revoked_partitions}

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if self.commit_failures:
            self.commit_failures -= 1
            self.events.append("commit-failed")
            raise BrokerUnavailable("coordinator away")
        self.committed.update(offsets)
        self.events.append(f"commit {sorted(offsets.items())}")

    def pause(self) -> None:
        self.events.append("pause")

    def resume(self) -> None:
        self.events.append("resume")

    def keep_membership(self) -> None:
        self.events.append("keep")

    def lag(self, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        return dict.fromkeys(offsets, 0)

    def close(self) -> None:
        self.events.append("close")


class ScriptedSink:
    def __init__(
        self, events: list[str], unavailable: int = 0, dead: Callable[[Item], bool] = lambda _: False
    ):
        self.events = events
        self.unavailable = unavailable
        self.dead = dead
        self.written: list[list[int]] = []

    def decode(self, record: Record) -> Item:
        return Item(record.topic, record.partition, record.offset, record.value)

    async def write(self, batch: list[Item]) -> list[DeadLetter]:
        if self.unavailable:
            self.unavailable -= 1
            self.events.append("write-unavailable")
            raise SinkUnavailable("PostgreSQL away")
        self.written.append([i.offset for i in batch])
        self.events.append(f"write {[i.offset for i in batch]}")
        return [
            DeadLetter(i.topic, i.partition, i.offset, None, i.value, "poison", "invalid_ride")
            for i in batch
            if self.dead(i)
        ]

    async def start_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        return {}

    def health(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        self.events.append("sink-close")


@dataclass(frozen=True)
class _Delivered:
    """The message a delivery report carries: where it was written."""

    at: int

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.at


class FakeLibrdkafkaProducer:
    """Answers each produce from a script: True acknowledged, False failed, None never answered,
    "full" the local queue is full (produce raises BufferError)."""

    def __init__(self, script: list[Any], events: list[str] | None = None) -> None:
        self.script = script
        self.events = events if events is not None else []
        self.pending: list[tuple[Any, Any]] = []
        self.acknowledged: list[bytes] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        key: Any = None,
        partition: int = -1,
        headers: Any = None,
        on_delivery: Any = None,
    ) -> None:
        outcome = self.script.pop(0) if self.script else True
        if outcome == "full":
            raise BufferError("queue full")
        self.pending.append((outcome, (on_delivery, value)))

    def flush(self, timeout: float | None = None) -> int:
        for outcome, (callback, value) in self.pending:
            if outcome is None:
                continue  # never answered within the flush
            if outcome:
                self.acknowledged.append(value)
                self.events.append(f"dead-letter {value.decode()}")
            callback(None if outcome else "failed", _Delivered(len(self.acknowledged)))
        self.pending = []
        return 0


def records(*offsets: int, partition: int = 0) -> list[Record]:
    return [Record("rides", partition, o, None, f"v{o}".encode()) for o in offsets]


def make_worker(
    consumer: ScriptedConsumer, sink: ScriptedSink, dead_letters: DeliveryProducer | None = None
) -> Worker[Item]:
    settings = LoopSettings(max_records=100, max_wait_ms=10, idle_s=0.01, retry_max_s=0.02, dlq_topic="dlq")
    return Worker(
        lambda _start: consumer,
        sink,
        settings,
        WorkerMetrics("t", registry=CollectorRegistry()),
        dead_letters,
    )


async def run_until_drained(worker: Worker[Item], consumer: ScriptedConsumer, commits: int = 1) -> None:
    """Run until every scripted batch was handed out and ``commits`` offset commits happened."""
    task = asyncio.create_task(worker.run())
    for _ in range(500):
        if not consumer.batches and sum(e.startswith("commit [") for e in consumer.events) >= commits:
            break
        await asyncio.sleep(0.01)
    worker.stopping.set()
    await asyncio.wait_for(task, 5)


async def test_a_store_outage_keeps_the_batch_pauses_and_commits_only_after_the_write() -> None:
    events: list[str] = []
    consumer = ScriptedConsumer([records(0, 1, 2)], events)
    sink = ScriptedSink(events, unavailable=2)
    worker = make_worker(consumer, sink)
    await run_until_drained(worker, consumer)
    assert sink.written == [[0, 1, 2]]
    first = events.index("write-unavailable")
    assert events[first : first + 2] == ["write-unavailable", "pause"]
    assert events.count("write-unavailable") == 2
    assert (
        events.index("write [0, 1, 2]") < events.index("commit [(('rides', 0), 3)]") < events.index("resume")
    )
    assert worker.metrics.retries._value.get() == 2
    assert events[-2:] == ["close", "sink-close"]


async def test_dead_letters_are_acknowledged_before_the_offsets_are_committed() -> None:
    events: list[str] = []
    consumer = ScriptedConsumer([records(0, 1, 2)], events)
    sink = ScriptedSink(events, dead=lambda i: i.offset == 1)
    producer = FakeLibrdkafkaProducer([False, True], events)  # the first attempt fails
    worker = make_worker(consumer, sink, DeliveryProducer(KafkaConfig("unused:1", "t"), producer=producer))  # type: ignore[arg-type]
    await run_until_drained(worker, consumer)
    assert producer.acknowledged == [b"v1"]
    assert events.index("dead-letter v1") < events.index("commit [(('rides', 0), 3)]")


async def test_messages_of_a_revoked_partition_are_not_written_after_a_retry() -> None:
    events: list[str] = []
    batch = records(0, 1, partition=0) + records(7, partition=3)
    consumer = ScriptedConsumer([batch], events)
    sink = ScriptedSink(events, unavailable=1)

    original = sink.write

    async def write_and_lose_partition_3(items: list[Item]) -> list[DeadLetter]:
        consumer.revoked_partitions.add(3)  # a rebalance while the store was down
        return await original(items)

    sink.write = write_and_lose_partition_3  # type: ignore[method-assign,assignment]
    worker = make_worker(consumer, sink)
    await run_until_drained(worker, consumer)
    assert sink.written == [[0, 1]]
    assert ("rides", 3) not in consumer.committed


async def test_a_failed_commit_is_kept_and_retried_with_the_next_batch() -> None:
    events: list[str] = []
    consumer = ScriptedConsumer([records(0, 1), records(2)], events)
    consumer.commit_failures = 1
    worker = make_worker(consumer, ScriptedSink(events))
    await run_until_drained(worker, consumer, commits=1)
    assert "commit-failed" in events
    assert consumer.committed == {("rides", 0): 3}


def test_dead_letters_are_sent_again_until_each_is_acknowledged() -> None:
    letters = [OutRecord("dlq", f"r{i}".encode()) for i in range(3)]
    # r0 fails, r1 never answers, r2 is acknowledged; then the queue is full for r0; then both go through
    producer = FakeLibrdkafkaProducer([False, None, True, "full", True, True])
    delivery = DeliveryProducer(KafkaConfig("unused:1", "t"), producer=producer)  # type: ignore[arg-type]
    waits: list[float] = []
    attempts = delivery.deliver_all(letters, waits.append)
    assert attempts == 3
    assert sorted(producer.acknowledged) == [b"r0", b"r1", b"r2"]
    assert waits == [0.5, 1.0]  # backoff doubles between attempts


def test_a_stop_during_an_outage_abandons_delivery_with_a_platform_error() -> None:
    delivery = DeliveryProducer(KafkaConfig("unused:1", "t"), producer=FakeLibrdkafkaProducer([False] * 10))  # type: ignore[arg-type]
    with pytest.raises(DeliveryAbandoned) as caught:
        delivery.deliver_all([OutRecord("dlq", b"x")], lambda _: True)
    assert isinstance(caught.value, XRidesError) and caught.value.retriable


def test_crashed_names_parts_that_died_without_being_struck() -> None:
    before = {"api": 10, "persister": 11, "kafka": 12, "es-indexer": 13}
    after = {"api": 10, "kafka": 99, "es-indexer": 14}  # persister gone, indexer replaced, kafka struck
    assert crashed(before, after, ("kafka",)) == ["es-indexer", "persister"]
    assert crashed(before, before, ()) == []
