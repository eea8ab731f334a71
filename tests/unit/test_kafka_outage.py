"""A broker outage seen from the consumers: kafka-python lets connection errors escape ``poll``
and fails ``send`` futures quietly. The persister and the indexer must outlive both (the fault
suite's kill-kafka scenario once found the persister dead after a broker restart)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from benchmarks.chaos.faults import crashed
from persister.consumer import RideConsumer
from persister.settings import PersisterSettings
from xrides.delivery import Record, deliver_all
from xrides.errors import DeliveryAbandoned, XRidesError


class _Future:
    def __init__(self, ok: bool | None) -> None:
        self.is_done = ok is not None
        self._ok = bool(ok)

    def succeeded(self) -> bool:
        return self._ok


class _Producer:
    """Answers each send from a script: True acknowledged, False failed, None never answered,
    "raise" no metadata (send raises)."""

    def __init__(self, script: list[Any], flush_raises: int = 0) -> None:
        self.script = script
        self.flush_raises = flush_raises
        self.acknowledged: list[bytes] = []

    def send(self, topic: str, key: bytes | None, value: bytes, headers: list[Any]) -> _Future:
        outcome = self.script.pop(0) if self.script else True
        if outcome == "raise":
            raise KafkaTimeoutError("no metadata")
        if outcome:
            self.acknowledged.append(value)
        return _Future(outcome)

    def flush(self, timeout: float) -> None:
        if self.flush_raises:
            self.flush_raises -= 1
            raise KafkaTimeoutError("flush timed out")


def test_dead_letters_are_sent_again_until_each_is_acknowledged() -> None:
    records = [Record("dlq", f"r{i}".encode()) for i in range(3)]
    # r0 fails, r1 never answers, r2 is acknowledged; then send raises for r0; then both go through
    producer = _Producer([False, None, True, "raise", True, True], flush_raises=1)
    waits: list[float] = []
    attempts = deliver_all(producer, records, waits.append)
    assert attempts == 3
    assert sorted(producer.acknowledged) == [b"r0", b"r1", b"r2"]
    assert waits == [0.5, 1.0]  # backoff doubles between attempts


def test_a_stop_during_an_outage_abandons_delivery_with_a_platform_error() -> None:
    producer = _Producer([False] * 10)
    with pytest.raises(DeliveryAbandoned) as caught:
        deliver_all(producer, [Record("dlq", b"x")], lambda _: True)
    assert isinstance(caught.value, XRidesError) and caught.value.retriable


class _Consumer:
    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.polls = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict[str, list[int]]:
        self.polls += 1
        outcome = self.script.pop(0) if self.script else {}
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _persister_consumer(script: list[Any]) -> RideConsumer:
    """The persister's consumer around a scripted ``poll`` (the real one needs a broker)."""
    consumer = RideConsumer.__new__(RideConsumer)
    consumer.settings = PersisterSettings(batch_max_rows=100, batch_max_wait_ms=50)
    consumer.consumer = _Consumer(script)
    consumer._kafka_down_since = None
    consumer._kafka_retry_s = 0.01
    return consumer


def test_persister_polls_again_after_a_broker_error_escapes_poll() -> None:
    down = KafkaConnectionError("111 ECONNREFUSED")
    consumer = _persister_consumer([down, down, {"tp": [1, 2]}, {"tp": [3]}])
    assert consumer._collect() == [1, 2, 3]
    assert consumer._kafka_down_since is None  # logged the outage, then its end


def test_persister_keeps_records_already_polled_when_the_broker_goes_away() -> None:
    consumer = _persister_consumer([{"tp": [1, 2]}, KafkaConnectionError("gone"), {"tp": [3]}])
    assert consumer._collect() == [1, 2]  # written first; polling resumes with the next batch
    assert consumer._collect() == [3]


def test_persister_returns_empty_when_the_broker_stays_away_so_a_stop_is_noticed() -> None:
    consumer = _persister_consumer([KafkaConnectionError("gone")] * 1000)
    assert consumer._collect() == []
    assert consumer._kafka_down_since is not None


def test_crashed_names_parts_that_died_without_being_struck() -> None:
    before = {"api": 10, "persister": 11, "kafka": 12, "es-indexer": 13}
    after = {"api": 10, "kafka": 99, "es-indexer": 14}  # persister gone, indexer replaced, kafka struck
    assert crashed(before, after, ("kafka",)) == ["es-indexer", "persister"]
    assert crashed(before, before, ()) == []
