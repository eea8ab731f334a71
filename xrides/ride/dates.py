"""Ride timestamps: XRides' ``month/day/year hour:minute[:second]`` and ISO 8601.

The legacy form carries no zone: it is local time in the configured zone (Asia/Kolkata by
default). ISO 8601 may carry an offset; without one it is local time too, so both forms mean the
same thing for the same digits. Everything is normalised to an aware UTC datetime.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

DEFAULT_ZONE = "Asia/Kolkata"

# Years outside this window are almost certainly a unit mistake (epoch seconds, 2-digit years).
MIN_YEAR = 2000
MAX_YEAR = 2100

_LEGACY = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")
_LEGACY_DAY = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})\s*$")
_ISO_DAY = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})\s*$")


class DateFormatError(ValueError):
    """The text is not a timestamp in an accepted form (or not a real date)."""


def parse_timestamp(text: str, zone: ZoneInfo) -> datetime:
    """Parse either accepted form into an aware UTC datetime."""
    if text.endswith("Z") and "T" in text:  # the canonical wire form: the fast, common path
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise DateFormatError(str(exc)) from exc
        if not MIN_YEAR <= moment.year <= MAX_YEAR:
            raise DateFormatError(f"year {moment.year} outside {MIN_YEAR}..{MAX_YEAR}")
        return moment
    match = _LEGACY.match(text)
    if match:
        month, day, year, hour, minute, second = match.groups()
        try:
            local = datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=zone
            )
        except ValueError as exc:
            raise DateFormatError(str(exc)) from exc
    else:
        if "T" not in text and " " not in text.strip():
            raise DateFormatError("neither month/day/year hour:minute nor ISO 8601")
        try:
            local = datetime.fromisoformat(text.strip())
        except ValueError as exc:
            raise DateFormatError(str(exc)) from exc
        if local.tzinfo is None:
            local = local.replace(tzinfo=zone)
    if not MIN_YEAR <= local.year <= MAX_YEAR:
        raise DateFormatError(f"year {local.year} outside {MIN_YEAR}..{MAX_YEAR}")
    return local.astimezone(UTC)


def parse_day(text: str) -> date:
    """A bare date, ``M/D/YYYY`` or ``YYYY-MM-DD`` (a day, not an instant: no zone applies)."""
    legacy = _LEGACY_DAY.match(text)
    iso = None if legacy else _ISO_DAY.match(text)
    if legacy:
        month, day, year = legacy.groups()
    elif iso:
        year, month, day = iso.groups()
    else:
        raise DateFormatError("not a bare date")
    try:
        value = date(int(year), int(month), int(day))
    except ValueError as exc:
        raise DateFormatError(str(exc)) from exc
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise DateFormatError(f"year {value.year} outside {MIN_YEAR}..{MAX_YEAR}")
    return value


@functools.lru_cache(maxsize=1 << 16)
def format_timestamp(value: datetime) -> str:
    """The canonical wire form: ISO 8601 in UTC with a ``Z`` suffix.

    Cached: rides share timestamps, and equal instants (whatever their zone) format alike.
    """
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"
