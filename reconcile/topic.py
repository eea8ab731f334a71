"""The Kafka side: the ``rides`` topic's offsets, and the few messages whose day must be read.

Only what PostgreSQL cannot say is read from the topic: the messages past the persister's
committed offsets (the lag) and any offset below them without a receipt. Both are normally a
handful; ``max_messages`` bounds a run when the persister is far behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from kafka import KafkaConsumer, TopicPartition

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
    """Blocking (kafka-python): callers run it in a thread. One consumer, no group, no commits."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            request_timeout_ms=15_000,
        )

    def close(self) -> None:
        self._consumer.close()

    def watermarks(self) -> dict[int, tuple[int, int]]:
        """partition -> (first offset still held, next offset to be written)."""
        partitions = self._consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        low = self._consumer.beginning_offsets(tps)
        high = self._consumer.end_offsets(tps)
        return {tp.partition: (low[tp], high[tp]) for tp in tps}

    def read(
        self, ranges: dict[int, tuple[int, int]], limit: int, timeout_s: float = 60.0
    ) -> list[TopicMessage]:
        """Messages of ``[start, stop)`` per partition, at most ``limit`` in all (the oldest first)."""
        wanted = {p: r for p, r in ranges.items() if r[1] > r[0]}
        out: list[TopicMessage] = []
        if not wanted or limit <= 0:
            return out
        tps = {p: TopicPartition(self.topic, p) for p in wanted}
        self._consumer.assign(list(tps.values()))
        for p, (start, _) in wanted.items():
            self._consumer.seek(tps[p], start)
        left = dict(wanted)
        deadline = time.monotonic() + timeout_s
        while left and len(out) < limit and time.monotonic() < deadline:
            polled = self._consumer.poll(timeout_ms=500, max_records=min(5000, limit - len(out)))
            for tp, records in polled.items():
                bounds = left.get(tp.partition)
                if bounds is None:
                    continue
                for record in records:
                    if bounds[0] <= record.offset < bounds[1] and len(out) < limit:
                        out.append(TopicMessage(tp.partition, record.offset, describe(record.value or b"")))
                if records and records[-1].offset + 1 >= bounds[1]:
                    del left[tp.partition]
                    self._consumer.pause(tp)
        self._consumer.assign([])
        return out
