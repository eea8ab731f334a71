"""Reading Kafka positions for tracking: end offsets, and batch manifests by offset.

A KafkaConsumer without a group (assign + seek, never commits) is not thread-safe, so calls are
serialised by a lock and run in a worker thread, away from the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from xrides.errors import BrokerUnavailable
from xrides.request_ids import Position

_END_OFFSETS_TTL_S = 0.5


class KafkaPositions:
    def __init__(self, bootstrap: str, rides_topic: str, requests_topic: str) -> None:
        self._bootstrap = bootstrap
        self.rides_topic = rides_topic
        self.requests_topic = requests_topic
        self._consumer: Any = None
        self._lock = threading.Lock()
        self._ends: dict[str, tuple[float, dict[int, int]]] = {}

    def _client(self) -> Any:
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                client_id="xrides-api-tracking",
                request_timeout_ms=5000,
            )
        return self._consumer

    def _end_offsets(self, topic: str) -> dict[int, int]:
        cached = self._ends.get(topic)
        if cached and time.monotonic() - cached[0] < _END_OFFSETS_TTL_S:
            return cached[1]
        consumer = self._client()
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        result = {tp.partition: offset for tp, offset in ends.items()}
        self._ends[topic] = (time.monotonic(), result)
        return result

    def _exists(self, topic: str, position: Position) -> bool:
        with self._lock:
            ends = self._end_offsets(topic)
        return position.partition in ends and 0 <= position.offset < ends[position.partition]

    def _read(self, topic: str, position: Position) -> bytes | None:
        with self._lock:
            consumer = self._client()
            tp = TopicPartition(topic, position.partition)
            consumer.assign([tp])
            consumer.seek(tp, position.offset)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                for record in consumer.poll(timeout_ms=500).get(tp, []):
                    if record.offset == position.offset:
                        value: bytes = record.value
                        return value
                    if record.offset > position.offset:
                        return None
            return None

    async def ride_exists(self, position: Position) -> bool:
        try:
            return await asyncio.to_thread(self._exists, self.rides_topic, position)
        except Exception as exc:
            raise BrokerUnavailable(f"Kafka not reachable for tracking: {type(exc).__name__}") from exc

    async def batch_items(self, position: Position) -> list[tuple[int, Position]] | None:
        """The (index, position) of every accepted item of a batch, or None if no such batch."""
        try:
            if not await asyncio.to_thread(self._exists, self.requests_topic, position):
                return None
            raw = await asyncio.to_thread(self._read, self.requests_topic, position)
        except Exception as exc:
            raise BrokerUnavailable(f"Kafka not reachable for tracking: {type(exc).__name__}") from exc
        if raw is None:
            return None
        manifest = orjson.loads(raw)
        return [(index, Position(p, o)) for index, p, o in manifest["items"]]

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await asyncio.to_thread(consumer.close)
