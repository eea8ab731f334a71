"""Pure parts of the persister: decoding, dedupe within a batch, dead-letter reasons."""

from __future__ import annotations

from datetime import date

import orjson

from persister.sink import decode, reason_label
from persister.writer import Message, jsonb_text, latest_per_booking
from xrides.db.migrate import _months_around
from xrides.kafka import Record
from xrides.ride import RideEnvelope, example_ride, parse_ride
from xrides.topics import RIDES


def record(value: bytes, offset: int = 0) -> Record:
    return Record(RIDES.name, 1, offset, b"k", value)


def envelope(booking_id: int, version: int) -> RideEnvelope:
    return RideEnvelope(parse_ride({**example_ride(), "booking_id": booking_id}), version)


def test_decode_sorts_good_from_poison() -> None:
    good = decode(record(envelope(1, 5).encode()))
    assert good.error is None
    assert good.booking_id == 1
    garbage = decode(record(b"\x00garbage"))
    assert garbage.error is not None
    assert reason_label(garbage.error) == "undecodable"
    invalid = decode(record(envelope(1, 5).encode().replace(b'"driver_id":0', b'"driver_id":-1')))
    assert invalid.error is not None
    assert reason_label(invalid.error) == "invalid_ride"
    assert "driver_id out of range" in invalid.error


def test_latest_per_booking_keeps_the_highest_version_then_offset() -> None:
    def message(booking: int, version: int, offset: int) -> Message:
        return Message("rides", 0, offset, None, b"", envelope(booking, version))

    old, new, same_version_later = message(1, 10, 1), message(1, 20, 2), message(1, 20, 3)
    other = message(2, 5, 4)
    latest = latest_per_booking([new, old, other, same_version_later])
    assert latest == {1: same_version_later, 2: other}


def test_partitions_are_planned_around_the_current_month() -> None:
    assert _months_around(date(2026, 12, 15), 2) == [
        date(2026, 11, 1),
        date(2026, 12, 1),
        date(2027, 1, 1),
        date(2027, 2, 1),
    ]


def test_quarantine_errors_are_json_postgresql_can_hold() -> None:
    errors = [{"field": "from_date", "received": "1/1/2013\x00", "nested": {"k\x00": ["\x00"]}}]
    text = jsonb_text(errors)
    assert "\\u0000" not in text
    assert orjson.loads(text) == [
        {"field": "from_date", "received": "1/1/2013\ufffd", "nested": {"k\ufffd": ["\ufffd"]}}
    ]
