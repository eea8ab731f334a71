"""Reading Kafka positions for tracking: does an offset exist, and batch manifests by offset.

A request id is a Kafka position (xrides/request_ids.py), so tracking asks the broker. The reader
is blocking (xrides/kafka/reader.py); its calls run in a worker thread, away from the event loop.
High watermarks are cached for half a second: a client polling many ids costs one request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson

from xrides.errors import BrokerUnavailable, XRidesError
from xrides.kafka import TopicReader
from xrides.quarantine import Refusal, decode_refusal
from xrides.request_ids import Position


@dataclass(frozen=True, slots=True)
class BatchItems:
    accepted: list[tuple[int, Position]]  # on the rides topic
    refused: list[tuple[int, Position]]  # on the quarantine topic


_END_OFFSETS_TTL_S = 0.5


class KafkaPositions:
    def __init__(
        self, reader: TopicReader, rides_topic: str, requests_topic: str, refused_topic: str
    ) -> None:
        self._reader = reader
        self.rides_topic = rides_topic
        self.requests_topic = requests_topic
        self.refused_topic = refused_topic
        self._ends: dict[str, tuple[float, dict[int, int]]] = {}

    def _end_offsets(self, topic: str, fresh: bool = False) -> dict[int, int]:
        cached = self._ends.get(topic)
        if cached and not fresh and time.monotonic() - cached[0] < _END_OFFSETS_TTL_S:
            return cached[1]
        ends = {p: w.high for p, w in self._reader.watermarks(topic).items()}
        self._ends[topic] = (time.monotonic(), ends)
        return ends

    def _exists(self, topic: str, position: Position) -> bool:
        """A position below the end offsets; a cached "no" is asked again (the id may have been
        handed out a moment ago, after the cache was filled), a cached "yes" is final."""
        for fresh in (False, True):
            ends = self._end_offsets(topic, fresh)
            if position.partition in ends and 0 <= position.offset < ends[position.partition]:
                return True
        return False

    async def exists(self, topic: str, position: Position) -> bool:
        try:
            return await asyncio.to_thread(self._exists, topic, position)
        except XRidesError:
            raise
        except Exception as exc:
            raise BrokerUnavailable(f"Kafka not reachable for tracking: {type(exc).__name__}") from exc

    async def ride_exists(self, position: Position) -> bool:
        return await self.exists(self.rides_topic, position)

    async def read(self, topic: str, position: Position) -> bytes | None:
        """The message at a position (None when there is none)."""
        if not await self.exists(topic, position):
            return None
        try:
            record = await asyncio.to_thread(
                self._reader.read_one, topic, position.partition, position.offset
            )
        except XRidesError:
            raise
        except Exception as exc:
            raise BrokerUnavailable(f"Kafka not reachable for tracking: {type(exc).__name__}") from exc
        return None if record is None else record.value

    async def batch_items(self, position: Position) -> BatchItems | None:
        """The (index, position) of every accepted and every refused item of a batch, or None."""
        raw = await self.read(self.requests_topic, position)
        if raw is None:
            return None
        manifest = orjson.loads(raw)
        return BatchItems(
            [(index, Position(p, o)) for index, p, o in manifest["items"]],
            [(index, Position(p, o)) for index, p, o in manifest.get("refused", [])],
        )

    async def refusal(self, position: Position) -> Refusal | None:
        """A refused ride, as the quarantine topic holds it."""
        raw = await self.read(self.refused_topic, position)
        return None if raw is None else decode_refusal(raw)

    async def close(self) -> None:
        await asyncio.to_thread(self._reader.close)
