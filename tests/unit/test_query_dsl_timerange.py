"""Time ranges resolve to half-open UTC bounds in the query's zone, across zone and DST edges."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from query_dsl import QueryError, parse_query, plan_query
from query_dsl.ast import AbsoluteRange, RelativeRange
from query_dsl.timerange import iso_utc, previous_period, resolve


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _bounds(rng: RelativeRange, zone: str, now: str) -> tuple[str, str]:
    resolved = resolve(rng, zone, _utc(now))
    return iso_utc(resolved.start), iso_utc(resolved.end)


def test_last_7_days_in_kolkata_are_whole_local_days_before_today() -> None:
    # 2026-11-28 02:00 in Kolkata is still 2026-11-27 in UTC: the local calendar decides
    now = "2026-11-27T20:30:00+00:00"
    assert _bounds(RelativeRange("last", 7, "day"), "Asia/Kolkata", now) == (
        "2026-11-20T18:30:00Z",
        "2026-11-27T18:30:00Z",
    )
    assert _bounds(RelativeRange("this", 1, "day"), "Asia/Kolkata", now) == (
        "2026-11-27T18:30:00Z",
        "2026-11-28T18:30:00Z",
    )


def test_the_same_instant_is_another_day_in_utc() -> None:
    now = "2026-11-27T20:30:00+00:00"
    assert _bounds(RelativeRange("this", 1, "day"), "UTC", now) == (
        "2026-11-27T00:00:00Z",
        "2026-11-28T00:00:00Z",
    )


def test_kolkata_hours_start_at_half_past_utc() -> None:
    assert _bounds(RelativeRange("last", 2, "hour"), "Asia/Kolkata", "2026-11-27T10:45:00+00:00") == (
        "2026-11-27T08:30:00Z",
        "2026-11-27T10:30:00Z",
    )


def test_berlin_spring_forward_day_has_23_hours() -> None:
    # Clocks went 02:00 -> 03:00 on Sunday 2026-03-29 in Berlin
    start, end = _bounds(RelativeRange("last", 1, "day"), "Europe/Berlin", "2026-03-30T10:00:00+02:00")
    assert (start, end) == ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")
    assert (_utc(end) - _utc(start)).total_seconds() == 23 * 3600


def test_berlin_fall_back_day_has_25_hours() -> None:
    # Clocks went 03:00 -> 02:00 on Sunday 2026-10-25 in Berlin
    start, end = _bounds(RelativeRange("last", 1, "day"), "Europe/Berlin", "2026-10-26T10:00:00+01:00")
    assert (start, end) == ("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z")
    assert (_utc(end) - _utc(start)).total_seconds() == 25 * 3600


def test_hours_across_a_clock_change_are_absolute() -> None:
    # 03:30 CEST on the fall-back day: "last 3 hours" is three real hours, through the repeated 02:00
    start, end = _bounds(RelativeRange("last", 3, "hour"), "Europe/Berlin", "2026-10-25T01:30:00+00:00")
    assert (_utc(end) - _utc(start)).total_seconds() == 3 * 3600


def test_weeks_start_on_monday_and_months_on_the_first() -> None:
    now = "2026-11-26T12:00:00+00:00"  # a Thursday
    assert _bounds(RelativeRange("this", 1, "week"), "Europe/Berlin", now) == (
        "2026-11-22T23:00:00Z",
        "2026-11-29T23:00:00Z",
    )
    # last month across the DST change: October in Berlin starts at +02:00 and ends at +01:00
    assert _bounds(RelativeRange("last", 1, "month"), "Europe/Berlin", now) == (
        "2026-09-30T22:00:00Z",
        "2026-10-31T23:00:00Z",
    )


def test_previous_period_of_this_week_is_last_week_in_local_time() -> None:
    this_week = RelativeRange("this", 1, "week")
    resolved = resolve(this_week, "Europe/Berlin", _utc("2026-11-04T12:00:00+00:00"))
    previous = previous_period(this_week, resolved)
    # the week before contains the fall-back Sunday: 169 hours, but still Monday to Monday locally
    assert iso_utc(previous.start) == "2026-10-25T23:00:00Z"
    assert previous.end == resolved.start
    assert iso_utc(resolved.start) == "2026-11-01T23:00:00Z"


def test_previous_period_of_an_absolute_range_has_the_same_length() -> None:
    rng = AbsoluteRange("2026-11-10", "2026-11-17")
    resolved = resolve(rng, "Asia/Kolkata", _utc("2026-11-20T00:00:00+00:00"), ("2026-11-10", "2026-11-17"))
    previous = previous_period(rng, resolved)
    assert iso_utc(previous.start) == "2026-11-02T18:30:00Z"
    assert previous.end == resolved.start


def test_absolute_bounds_without_offset_are_local_and_with_offset_are_kept() -> None:
    now = _utc("2026-11-20T00:00:00+00:00")
    plan = plan_query(parse_query("count during '2026-11-01' .. '2026-11-02T06:00+00:00'"), {}, now)
    assert plan.range.as_dict() == {
        "from": "2026-10-31T18:30:00Z",
        "to": "2026-11-02T06:00:00Z",
        "zone": "Asia/Kolkata",
    }


def test_parameters_bind_range_bounds() -> None:
    now = _utc("2026-11-20T00:00:00+00:00")
    query = parse_query("count during $from .. $to zone 'UTC'")
    plan = plan_query(query, {"from": "2026-11-01", "to": "2026-11-03"}, now)
    assert plan.range.as_dict()["from"] == "2026-11-01T00:00:00Z"
    with pytest.raises(QueryError, match=r"parameter \$to has no value"):
        plan_query(query, {"from": "2026-11-01"}, now)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("count during '2026-11-08' .. '2026-11-01'", "the range is empty"),
        ("count during '2026-13-01' .. '2026-11-01'", "not an ISO 8601"),
        ("count during '1900-01-01' .. '2026-11-01'", "outside"),
        ("count during last 1 day zone 'Mars/Olympus'", "unknown time zone"),
        ("count during last 1 day zone '../../etc/passwd'", "not an IANA time zone"),
        ("count by hour(from_date, 'EST5EDT,M3.2.0,M11.1.0') during last 1 day", "not an IANA time zone"),
    ],
)
def test_bad_ranges_and_zones(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        plan_query(parse_query(text), {}, _utc("2026-11-20T00:00:00+00:00"))
