"""Demand windows (flink_jobs/demand.py), log actions (flink_jobs/logs.py) and their templates."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from flink_jobs.demand import (
    WINDOW_MS,
    DemandEvent,
    count,
    demand_action,
    demand_event,
    demand_id,
    is_dropped,
    late_action,
    window_start,
)
from flink_jobs.logs import log_action
from xrides.ride import RideEnvelope, example_ride, parse_ride
from xrides.search.templates import LOG_PROPERTIES, demand_template, logs_template, template_name

T0 = int(datetime(2013, 1, 10, 10, 0, tzinfo=UTC).timestamp() * 1000)


def event(
    booking: int, version: int = 1, cancelled: bool = False, at_ms: int = T0, area: str = "83"
) -> DemandEvent:
    return DemandEvent(area, str(booking), version, cancelled, at_ms)


def test_demand_event_is_the_pickup_area_at_booking_time() -> None:
    ride = parse_ride({**example_ride(), "car_cancellation": 1})
    found = demand_event(RideEnvelope(ride, 7))
    assert found == DemandEvent(
        "83", str(ride.booking_id), 7, True, int(ride.booking_created.timestamp() * 1000)
    )
    assert DemandEvent.from_tuple(found.as_tuple()) == found


def test_windows_are_five_minutes_aligned_to_the_epoch() -> None:
    assert window_start(T0) == T0
    assert window_start(T0 + WINDOW_MS - 1) == T0
    assert window_start(T0 + WINDOW_MS) == T0 + WINDOW_MS
    assert WINDOW_MS == 300_000


def test_lateness_rule_matches_flink() -> None:
    end = T0 + WINDOW_MS
    assert not is_dropped(end, 60_000, end - 1)  # the watermark reached the end: fires, still open
    assert not is_dropped(end, 60_000, end + 59_998)
    assert is_dropped(end, 60_000, end + 59_999)  # max timestamp + lateness reached: gone
    assert is_dropped(end, 0, end - 1)


def test_count_takes_distinct_bookings_and_their_latest_version() -> None:
    events = [event(1), event(2, cancelled=True), event(1, version=3, cancelled=True), event(2, version=2)]
    counts = count(events)
    assert (counts.rides, counts.cancellations) == (2, 1)  # 1 cancelled later; 2 un-cancelled later
    assert count([event(1, version=5, cancelled=True), event(1, version=4)]).cancellations == 1  # order-free
    assert count([]).rides == 0


def test_demand_action_is_an_idempotent_overwrite_versioned_by_the_ride_count() -> None:
    events = [event(1), event(2, cancelled=True), event(3)]
    action = demand_action("83", T0, T0 + WINDOW_MS, events, "ride-demand-", oldest_ms=0, now_ms=T0 + 1)
    assert action == {
        "op": "index",
        "index": "ride-demand-2013.01.10",
        "id": "83-2013-01-10T10:00:00Z",
        "version": 3,
        "doc": {
            "area_id": "83",
            "window_start": "2013-01-10T10:00:00Z",
            "window_end": "2013-01-10T10:05:00Z",
            "rides": 3,
            "cancellations": 1,
            "updated_at": "2013-01-10T10:00:00.001000Z",
        },
    }
    assert action["id"] == demand_id("83", T0)
    assert set(action["doc"]) == set(demand_template("ride-demand-")["template"]["mappings"]["properties"])
    old = demand_action("83", T0, T0 + WINDOW_MS, events, "ride-demand-", oldest_ms=T0 + 1, now_ms=T0)
    assert old["op"] == "skip"


def test_late_events_become_counted_skips() -> None:
    action = late_action(event(9, at_ms=T0 + 61_000))
    assert action["op"] == "skip"
    assert action["reason"] == "late for its demand window"
    assert action["id"] == "83-2013-01-10T10:00:00Z/9"


def test_templates_do_not_overlap_and_logs_outrank_the_builtin_data_streams() -> None:
    assert template_name("ride-demand-") == "xrides-ride-demand"
    assert template_name("logs-") == "xrides-logs"
    assert demand_template("ride-demand-")["index_patterns"] == ["ride-demand-*"]
    template = logs_template("logs-")
    assert template["priority"] > 100
    assert template["template"]["mappings"]["dynamic"] is False
    assert LOG_PROPERTIES["request"]["properties"]["id"] == {"type": "keyword"}
    assert LOG_PROPERTIES["@timestamp"] == {"type": "date"}


def test_log_action_indexes_by_day_and_event_id() -> None:
    line = {
        "@timestamp": "2025-03-04T05:06:07.123+00:00",
        "log.level": "info",
        "service.name": "xrides-api",
        "message": "batch accepted",
        "request.id": "b-1-2",
        "event.id": "abc",
        "error": "a plain value where the mapping has an object",
    }
    action = log_action(orjson.dumps(line), "logs-")
    assert action["op"] == "index"
    assert action["index"] == "logs-2025.03.04"
    assert action["id"] == "abc"
    assert action["version"] == 1
    assert action["doc"]["request.id"] == "b-1-2"
    assert action["doc"]["error_value"] == line["error"]
    assert "error" not in action["doc"]
    without_id = {k: v for k, v in line.items() if k != "event.id"}
    first, second = (
        log_action(orjson.dumps(without_id), "logs-"),
        log_action(orjson.dumps(without_id), "logs-"),
    )
    assert first["id"] == second["id"]  # a hash of the line: replays stay idempotent
    assert log_action(b"\xff not json", "logs-")["op"] == "dead"
    assert log_action(b'{"message": "no time"}', "logs-")["op"] == "dead"
