"""Time ranges resolved to explicit half-open UTC bounds ``[from, to)`` in an IANA zone.

Relative ranges are whole calendar units of the query's zone: ``last 7 days`` is the seven
local days before today (today excluded), ``this week`` is Monday 00:00 to next Monday 00:00.
Days, weeks and months are counted on the local calendar, so a day that has 23 or 25 hours
because of a daylight-saving change is still one day; minutes and hours are absolute time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from query_dsl.ast import AbsoluteRange, RelativeRange, TimeRange, TimeUnit
from query_dsl.errors import QueryError

MIN_YEAR, MAX_YEAR = 1970, 2200


@dataclass(frozen=True, slots=True)
class ResolvedRange:
    start: datetime  # aware, UTC
    end: datetime  # aware, UTC, exclusive
    zone: str
    expression: str

    def as_dict(self) -> dict[str, Any]:
        return {"from": iso_utc(self.start), "to": iso_utc(self.end), "zone": self.zone}

    @property
    def span(self) -> timedelta:
        return self.end - self.start


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def zone_of(name: str, path: str = "$.zone") -> ZoneInfo:
    """An IANA zone, refusing anything that is not a plain zone name (no paths, no POSIX TZ strings)."""
    if not name or len(name) > 64 or not all(c.isalnum() or c in "/_-+" for c in name) or ".." in name:
        raise QueryError(f"{name[:64]!r} is not an IANA time zone name", path)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise QueryError(f"unknown time zone {name!r}", path) from exc


def parse_instant(text: str, zone: ZoneInfo, path: str) -> datetime:
    """``2026-11-01`` (local midnight), ``2026-11-01T06:30`` (local) or with an offset / ``Z``."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise QueryError(f"{text[:40]!r} is not an ISO 8601 date or timestamp", path) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise QueryError(f"year {moment.year} is outside {MIN_YEAR}..{MAX_YEAR}", path)
    return moment.astimezone(UTC)


def floor_local(moment: datetime, unit: TimeUnit, zone: ZoneInfo) -> datetime:
    """The start of the local calendar unit holding ``moment`` (as a naive local datetime)."""
    local = moment.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    if unit == "minute":
        return local
    local = local.replace(minute=0)
    if unit == "hour":
        return local
    local = local.replace(hour=0)
    if unit == "week":
        return local - timedelta(days=local.weekday())
    if unit == "month":
        return local.replace(day=1)
    return local


def shift(local: datetime, unit: TimeUnit, count: int, zone: ZoneInfo) -> datetime:
    """``local`` (naive, in ``zone``) moved by ``count`` units, returned as an aware UTC instant."""
    if unit in ("minute", "hour"):
        # absolute time: an hour is 3,600 s even across a clock change
        start = to_utc(local, zone)
        return start + (timedelta(minutes=count) if unit == "minute" else timedelta(hours=count))
    if unit == "day":
        return to_utc(local + timedelta(days=count), zone)
    if unit == "week":
        return to_utc(local + timedelta(weeks=count), zone)
    months = local.year * 12 + local.month - 1 + count
    return to_utc(local.replace(year=months // 12, month=months % 12 + 1), zone)


def to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local time in ``zone`` as a UTC instant.

    An ambiguous time (autumn) is its first occurrence; a skipped one (spring) keeps the offset
    before the change, which lands after the gap: a day starting in a gap starts when the clock jumps.
    """
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def resolve(
    time_range: TimeRange, zone_name: str, now: datetime, bounds: tuple[str, str] | None = None
) -> ResolvedRange:
    """Resolve a range; ``bounds`` are an absolute range's start/end after parameters are bound."""
    zone = zone_of(zone_name)
    if isinstance(time_range, RelativeRange):
        floor = floor_local(now, time_range.unit, zone)
        if time_range.kind == "this":
            start, end = shift(floor, time_range.unit, 0, zone), shift(floor, time_range.unit, 1, zone)
        else:
            start = shift(floor, time_range.unit, -time_range.count, zone)
            end = shift(floor, time_range.unit, 0, zone)
        return ResolvedRange(start, end, zone_name, time_range.text())
    assert isinstance(time_range, AbsoluteRange)
    assert bounds is not None
    start = parse_instant(bounds[0], zone, "$.time_range.from")
    end = parse_instant(bounds[1], zone, "$.time_range.to")
    if end <= start:
        raise QueryError(
            f"the range is empty: to ({bounds[1]}) is not after from ({bounds[0]})", "$.time_range"
        )
    return ResolvedRange(start, end, zone_name, f"{bounds[0]} .. {bounds[1]}")


def previous_period(time_range: TimeRange, resolved: ResolvedRange) -> ResolvedRange:
    """The period just before: the same count of calendar units, or the same length when absolute."""
    zone = zone_of(resolved.zone)
    if isinstance(time_range, RelativeRange):
        local_start = resolved.start.astimezone(zone).replace(tzinfo=None)
        count = 1 if time_range.kind == "this" else time_range.count
        start = shift(local_start, time_range.unit, -count, zone)
    else:
        start = resolved.start - resolved.span
    return ResolvedRange(start, resolved.start, resolved.zone, f"previous period of {resolved.expression}")
