"""Reading positions without a group: watermarks, one message, or ranges of offsets.

Tracking (a request id is a Kafka position) and the reconciler need to ask "does this offset
exist?" and "what is at these offsets?"; they never consume as a group member or commit. Calls
are blocking and serialised by a lock (one assignment at a time); async callers run them in a
thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from xrides.kafka.config import KafkaConfig
from xrides.kafka.consumer import Record, _record
from xrides.kafka.errors import translate


@dataclass(frozen=True, slots=True)
class Watermarks:
    low: int  # the first offset still held (older ones are past retention)
    high: int  # the next offset to be written


class TopicReader:
    def __init__(self, config: KafkaConfig, timeout_s: float = 5.0) -> None:
        self._consumer = Consumer(config.reader())
        self._lock = threading.Lock()
        self._timeout_s = timeout_s

    def partitions(self, topic: str) -> list[int]:
        with self._lock:
            try:
                metadata = self._consumer.list_topics(topic, timeout=self._timeout_s)
            except KafkaException as exc:
                raise translate(exc, "metadata") from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def watermarks(self, topic: str) -> dict[int, Watermarks]:
        """partition -> (low, high) of every partition of ``topic``."""
        out: dict[int, Watermarks] = {}
        for partition in self.partitions(topic):
            with self._lock:
                try:
                    low, high = self._consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=self._timeout_s
                    )
                except KafkaException as exc:
                    raise translate(exc, "watermarks") from exc
            out[partition] = Watermarks(low, high)
        return out

    def read(self, topic: str, ranges: dict[int, tuple[int, int]], limit: int) -> list[Record]:
        """Messages of ``[start, stop)`` per partition, at most ``limit`` in all, oldest first per
        partition. Stops early at ``timeout_s`` without progress (a broker away)."""
        wanted = {p: r for p, r in ranges.items() if r[1] > r[0]}
        out: list[Record] = []
        if not wanted or limit <= 0:
            return out
        with self._lock:
            assigned = [TopicPartition(topic, p, start) for p, (start, _) in wanted.items()]
            self._consumer.assign(assigned)
            try:
                left = dict(wanted)
                progress = time.monotonic()
                while left and len(out) < limit and time.monotonic() - progress < self._timeout_s:
                    for message in self._consumer.consume(min(5000, limit - len(out)), 0.2):
                        if message.error() is not None:
                            continue
                        partition, offset = message.partition() or 0, message.offset() or 0
                        bounds = left.get(partition)
                        if bounds is None:
                            continue
                        progress = time.monotonic()
                        if bounds[0] <= offset < bounds[1] and len(out) < limit:
                            out.append(_record(message))
                        if offset + 1 >= bounds[1]:
                            del left[partition]
                            self._consumer.pause([TopicPartition(topic, partition)])
            finally:
                # librdkafka keeps a partition's pause across unassign/assign: resume it, or the
                # next read of the same partition would wait for nothing
                self._consumer.resume(assigned)
                self._consumer.unassign()
        return out

    def read_one(self, topic: str, partition: int, offset: int) -> Record | None:
        """The message at one position, or None when there is none (compacted, past retention)."""
        found = self.read(topic, {partition: (offset, offset + 1)}, 1)
        return found[0] if found and found[0].offset == offset else None

    def close(self) -> None:
        with self._lock:
            self._consumer.close()
