"""Enrichment, the job's per-booking plan, the index template and the indexer's bulk handling."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from flink_jobs.actions import BookingState, Window, plan
from indexer.sink import bulk_body, classify
from xrides.ride import RideEnvelope, elasticsearch_properties, example_ride, parse_ride
from xrides.ride.enrich import ServiceRegion, booking_channel, daily_index, enrich, haversine_km
from xrides.ride.quality import FLAG_NAMES
from xrides.search.templates import ENRICHED_PROPERTIES, rides_template

KOLKATA = ZoneInfo("Asia/Kolkata")
REGION = ServiceRegion()


def ride(**changes: object) -> object:
    return parse_ride({**example_ride(), **changes})


def test_haversine_matches_an_independent_formula() -> None:
    # Spherical law of cosines, a different formula for the same great-circle distance.
    lat1, lon1, lat2, lon2 = 12.92415, 77.67229, 12.92732, 77.63575
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    cosines = math.acos(math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)) * 6371.0088
    assert haversine_km(lat1, lon1, lat2, lon2) == pytest.approx(cosines, rel=1e-6)
    assert haversine_km(12.97, 77.59, 13.20, 77.71) == pytest.approx(28.6, abs=0.2)  # MG Road -> airport
    assert haversine_km(1, 2, 1, 2) == 0


def test_enriched_document_of_the_prototype_ride() -> None:
    doc = enrich(ride(to_date="1/1/2013 2:45:30", online_booking=1), KOLKATA, REGION)  # type: ignore[arg-type]
    assert doc["lead_time_min"] == 21.0  # booked 1:39, pickup 2:00
    assert doc["trip_duration_min"] == 45.5
    assert doc["hour_of_day"] == 2  # local time, not UTC (20:30 the day before)
    assert doc["day_of_week"] == 2  # Tuesday 1 January 2013
    assert doc["is_weekend"] is False
    assert doc["booking_channel"] == "online"
    assert doc["pickup"] == {"lat": 12.92415, "lon": 77.67229}
    assert doc["distance_km"] == round(haversine_km(12.92415, 77.67229, 12.92732, 77.63575), 3)
    assert doc["quality"] == dict.fromkeys((*FLAG_NAMES, "outside_service_region"), False)
    assert doc["to_date_day"] is None and "extras" not in doc


def test_a_bare_drop_off_day_is_no_midnight_and_extras_are_kept() -> None:
    doc = enrich(ride(to_date="1/2/2013", fare_inr=640), KOLKATA, REGION)  # type: ignore[arg-type]
    assert (doc["to_date"], doc["to_date_day"]) == (None, "2013-01-02")
    assert doc["trip_duration_min"] is None
    assert doc["quality"]["to_date_date_only"] is True
    assert doc["extras"] == {"fare_inr": 640}


def test_quality_flags_flag_and_never_drop() -> None:
    odd = ride(
        to_date="1/1/2013 1:00",  # before the pickup
        booking_created="1/1/2013 3:00",  # after the pickup
        to_lat=19.07,
        to_long=72.88,  # Mumbai
    )
    doc = enrich(odd, KOLKATA, REGION)  # type: ignore[arg-type]
    assert doc["quality"]["dropoff_before_pickup"]
    assert doc["quality"]["booked_after_pickup"]
    assert doc["quality"]["outside_service_region"]
    assert doc["lead_time_min"] < 0
    missing = enrich(ride(to_lat=None, to_long=None), KOLKATA, REGION)  # type: ignore[arg-type]
    assert missing["quality"]["missing_coordinates"]
    assert missing["distance_km"] is None
    assert missing["dropoff"] is None


def test_weekend_and_channels() -> None:
    saturday = enrich(ride(from_date="1/5/2013 23:30"), KOLKATA, REGION)  # type: ignore[arg-type]
    assert (saturday["day_of_week"], saturday["is_weekend"], saturday["hour_of_day"]) == (6, True, 23)
    assert [booking_channel(1, 0), booking_channel(0, 1), booking_channel(0, 0)] == [
        "online",
        "mobile_site",
        "offline",
    ]


def envelope(version: int, **changes: object) -> bytes:
    return RideEnvelope(parse_ride({**example_ride(), **changes}), version).encode()


WINDOW = Window(hot_days=60, reference_time=datetime(2013, 2, 1, tzinfo=UTC))


def test_plan_indexes_moves_skips_and_ignores_old_versions() -> None:
    state = BookingState()
    (first,) = plan(envelope(10), state, WINDOW, KOLKATA, REGION, "rides-")
    assert (first["op"], first["index"], first["id"], first["version"]) == (
        "index",
        "rides-2012.12.31",
        "132512",
        10,
    )
    moved = plan(envelope(20, from_date="1/20/2013 9:00"), state, WINDOW, KOLKATA, REGION, "rides-")
    assert [(a["op"], a["index"]) for a in moved] == [
        ("delete", "rides-2012.12.31"),
        ("index", "rides-2013.01.20"),
    ]
    assert plan(envelope(15), state, WINDOW, KOLKATA, REGION, "rides-") == []  # older than what is indexed
    old = plan(envelope(30, from_date="1/1/2012 9:00"), state, WINDOW, KOLKATA, REGION, "rides-")
    assert [a["op"] for a in old] == ["delete", "skip"]  # left the window: remove the hot copy
    assert state.index is None


def test_plan_dead_letters_poison() -> None:
    (action,) = plan(b"\xff{nope", BookingState(), WINDOW, KOLKATA, REGION, "rides-")
    assert action["op"] == "dead"
    assert action["raw"].encode("latin-1") == b"\xff{nope"


def test_template_covers_the_contract_and_the_enrichment() -> None:
    mapping = rides_template("rides-")["template"]["mappings"]
    assert mapping["dynamic"] == "strict"
    for name, spec in elasticsearch_properties().items():
        assert mapping["properties"][name] == spec
    for name in ENRICHED_PROPERTIES:
        assert name in mapping["properties"]
    assert daily_index("rides-", ride()) == "rides-2012.12.31"  # type: ignore[arg-type]


def test_bulk_body_and_outcomes() -> None:
    actions = [
        {"op": "index", "index": "i", "id": "1", "version": 5, "doc": {"a": 1}},
        {"op": "delete", "index": "j", "id": "1", "version": 5},
    ]
    operations, owners = bulk_body(actions)
    assert operations[0] == {
        "index": {"_index": "i", "_id": "1", "version": 5, "version_type": "external_gte"}
    }
    assert operations[1] == {"a": 1}
    assert operations[2]["delete"]["_index"] == "j"
    assert owners == [0, 1]
    assert classify({"index": {"status": 201}}) == "ok"
    assert classify({"index": {"status": 409}}) == "stale"
    assert classify({"delete": {"status": 404}}) == "ok"
    assert classify({"index": {"status": 429}}) == "retry"
    assert classify({"index": {"status": 400}}) == "refused"
    assert orjson.loads(orjson.dumps(operations))  # serialisable as sent
