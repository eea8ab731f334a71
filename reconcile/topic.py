"""The Kafka side: the ``rides`` topic's offsets, and the few messages whose day must be read.

Only what PostgreSQL cannot say is read from the topic: the messages past the persister's
committed offsets (the lag) and any offset below them without a receipt. Both are normally a
handful; ``max_messages`` bounds a run when the persister is far behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from xrides.kafka import KafkaConfig
from xrides.kafka import TopicReader as KafkaTopicReader
from xrides.ride import RideValidationError, decode_envelope, parse_timestamp

_UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Described:
    """What a message says about its ride, as far as it can be read."""

    booking_id: int | None
    day: date | None  # UTC pickup day
    version: int | None  # microseconds since the epoch at acceptance


@dataclass(frozen=True, slots=True)
class TopicMessage:
    partition: int
    offset: int
    ride: Described


def describe(raw: bytes, booking_id: int | None = None) -> Described:
    """Booking, pickup day and version of a message; a ride that breaks the contract still has them
    when its ``booking_id`` and ``from_date`` are readable (a dead letter for a bad coordinate)."""
    try:
        envelope = decode_envelope(raw)
    except (RideValidationError, ValueError, TypeError):
        pass
    else:
        return Described(
            envelope.ride.booking_id, envelope.ride.from_date.astimezone(UTC).date(), envelope.version
        )
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Described(booking_id, None, None)
    ride = data.get("ride") if isinstance(data, dict) else None
    if not isinstance(ride, dict):
        return Described(booking_id, None, None)
    if booking_id is None and type(ride.get("booking_id")) is int:
        booking_id = ride["booking_id"]
    day: date | None = None
    if isinstance(ride.get("from_date"), str):
        try:
            day = parse_timestamp(ride["from_date"], _UTC).date()
        except ValueError:
            day = None
    version = data.get("version")
    return Described(booking_id, day, version if type(version) is int else None)


class TopicReader:
    """Blocking (callers run it in a thread): one topic's watermarks and ranges of messages."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._reader = KafkaTopicReader(KafkaConfig(bootstrap, "xrides-reconcile"), timeout_s=15.0)

    def close(self) -> None:
        self._reader.close()

    def watermarks(self) -> dict[int, tuple[int, int]]:
        """partition -> (first offset still held, next offset to be written)."""
        return {p: (w.low, w.high) for p, w in self._reader.watermarks(self.topic).items()}

    def read(self, ranges: dict[int, tuple[int, int]], limit: int) -> list[TopicMessage]:
        """Messages of ``[start, stop)`` per partition, at most ``limit`` in all (the oldest first)."""
        return [
            TopicMessage(r.partition, r.offset, describe(r.value))
            for r in self._reader.read(self.topic, ranges, limit)
        ]
