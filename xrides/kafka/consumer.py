"""A consumer-group member that hands out bounded batches and commits only what it is told.

Built on librdkafka (confluent-kafka): fetching, heartbeats and reconnects run in its own threads
without the GIL, and a broker outage never escapes as an exception from a poll (kafka-python's
did, and ended the persister once in the fault suite); the poll just returns nothing until the
broker is back.

Every call is blocking: the worker loop runs them in a thread, under this object's lock, so a
commit never overlaps a poll. Rebalance callbacks run inside :meth:`poll_batch`, in that thread.

Where a batch starts after an assignment is the sink's choice: ``start_offsets`` (the persister
reads the offsets PostgreSQL committed with the rows) or, when it has nothing for a partition,
the group's committed offset in Kafka.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from xrides.kafka.config import CLIENT_LOG, KafkaConfig
from xrides.kafka.errors import translate

log = logging.getLogger("xrides.kafka.consumer")

# partition numbers of ``topic`` -> the next offset to read, for those the caller knows
StartOffsets = Callable[[str, list[int]], dict[int, int]]


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message: where it was, and its bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def _record(message: Message) -> Record:
    raw: Any = message.headers() or []  # [(str, bytes | None), ...]
    headers = tuple((str(k), bytes(v or b"")) for k, v in raw)
    return Record(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value() or b"",
        headers,
    )


class BatchConsumer:
    def __init__(
        self,
        config: KafkaConfig,
        group_id: str,
        topics: Sequence[str],
        start_offsets: StartOffsets | None = None,
        **overrides: object,
    ) -> None:
        self._lock = threading.Lock()
        self._start_offsets = start_offsets
        self._revoked: set[tuple[str, int]] = set()
        self._down_since: float | None = None
        self._consumer = Consumer(
            config.consumer(group_id, **overrides), error_cb=self._on_error, logger=CLIENT_LOG
        )
        self._consumer.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke)

    # -- rebalances (inside poll, in the polling thread) --------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        chosen: dict[tuple[str, int], int] = {}
        if self._start_offsets is not None:
            for topic in {tp.topic for tp in partitions}:
                numbers = sorted(tp.partition for tp in partitions if tp.topic == topic)
                try:
                    found = self._start_offsets(topic, numbers)
                except Exception as exc:  # the sink's store is down: Kafka's offsets (a batch behind)
                    log.warning("start offsets unavailable", extra={"error.message": str(exc)[:200]})
                    found = {}
                chosen.update({(topic, p): o for p, o in found.items()})
        for tp in partitions:
            if (tp.topic, tp.partition) in chosen:
                tp.offset = chosen[(tp.topic, tp.partition)]
            self._revoked.discard((tp.topic, tp.partition))
        consumer.assign(partitions)
        if chosen:
            # The sink's store is the truth (rows and offsets commit together); Kafka's copy lags it
            # when a member died between the two commits. Mirror it at once: until new records reach
            # such a partition, every lag reading (the alerts, the fault suite's drain) would otherwise
            # report records that were stored long ago.
            mirrored = [TopicPartition(t, p, o) for (t, p), o in chosen.items()]
            try:
                consumer.commit(offsets=mirrored, asynchronous=True)
            except KafkaException as exc:  # the next batch's commit carries them anyway
                log.warning("start offsets not mirrored to Kafka", extra={"error.message": str(exc)[:200]})
        log.info(
            "partitions assigned",
            extra={
                "kafka.partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in partitions),
                "kafka.offsets": {f"{t}/{p}": o for (t, p), o in chosen.items()},
            },
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._revoked |= {(tp.topic, tp.partition) for tp in partitions}
        log.info(
            "partitions revoked",
            extra={"kafka.partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)},
        )
        consumer.unassign()

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning("Kafka unavailable; polling again", extra={"error.message": error.str()[:200]})
        elif error.fatal():
            log.error("Kafka consumer fatal error", extra={"error.message": error.str()[:200]})

    def _available(self) -> None:
        if self._down_since is not None:
            down = time.monotonic() - self._down_since
            self._down_since = None
            log.info("Kafka available again", extra={"event.duration_s": round(down, 1)})

    # -- the batch -------------------------------------------------------------------------

    def poll_batch(self, max_records: int, max_wait_s: float, idle_s: float = 1.0) -> list[Record]:
        """Up to ``max_records``: what arrives within ``max_wait_s`` of the first record, or nothing
        after ``idle_s`` (so the caller can notice a stop request). Blocking."""
        with self._lock:
            first = self._consumer.consume(1, idle_s)
            messages = [m for m in first if m.error() is None]
            if messages and max_records > 1:
                more = self._consumer.consume(max_records - 1, max_wait_s)
                messages += [m for m in more if m.error() is None]
            self._log_errors(first)
        if messages:
            self._available()
        return [_record(m) for m in messages]

    def _log_errors(self, messages: list[Message]) -> None:
        for message in messages:
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error.message": error.str()[:200]})

    def revoked(self, topic: str, partition: int) -> bool:
        """Was this partition taken away since it was last assigned (its batch must be dropped)?"""
        return (topic, partition) in self._revoked

    def owned(self) -> set[tuple[str, int]]:
        with self._lock:
            return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit the next offsets of partitions this member still owns; raises BrokerUnavailable."""
        with self._lock:
            owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
            wanted = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if (t, p) in owned]
            if not wanted:
                return
            try:
                self._consumer.commit(offsets=wanted, asynchronous=False)
            except KafkaException as exc:
                raise translate(exc, "offset commit") from exc

    def pause(self) -> None:
        with self._lock:
            self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        with self._lock:
            self._consumer.resume(self._consumer.assignment())

    def keep_membership(self) -> None:
        """Serve heartbeats' rebalance callbacks while paused (nothing is fetched when paused)."""
        with self._lock:
            self._log_errors(self._consumer.consume(1, 0))

    def lag(self, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Messages behind the end of each partition, from the high watermarks the fetcher already
        knows (no request to the broker)."""
        out: dict[tuple[str, int], int] = {}
        with self._lock:
            for (topic, partition), offset in offsets.items():
                try:
                    _, high = self._consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), cached=True
                    )
                except KafkaException:
                    continue
                if high not in (None, OFFSET_INVALID) and high >= 0:
                    out[(topic, partition)] = max(0, high - offset)
        return out

    def close(self) -> None:
        """Leave the group without committing (the sink decides what is committed)."""
        with self._lock:
            self._consumer.close()
