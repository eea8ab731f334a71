"""The ride: a typed value, its strict parser, and its canonical wire form.

Parsing collects *every* problem of a ride before failing, so a client fixes them in one round
trip. Messages keep the prototype's wording (``vehicle_model_id data type mismatch, ...``) because
XRides' clients match on them; the structured :class:`FieldError` adds the machine-readable parts.

Decisions (see docs/ride-contract.md):
- strict types: ``"28"`` is not an int, ``true`` is not 1, ``12.0`` is not an id;
- unknown fields are kept with the ride (``extras``) and reported back as warnings, naming the
  closest known field: a client that sends a field the platform does not know yet (``fare_inr``)
  loses no ride over it, and a typo is visible at once. ``strict`` refuses them instead;
- ``Car_Cancellation`` (historical exports) is accepted as ``car_cancellation``;
- coordinates come in pairs: both set or both null;
- a bare date in a ``date_only`` field (``to_date``) keeps its precision: the day goes to
  ``to_date_day`` and the timestamp stays null, so nobody mistakes the day for its midnight;
- a ride needs a pickup area or, for a long-distance ride booked by city, a pickup city.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from xrides.errors import InvalidInput
from xrides.ride.dates import DEFAULT_ZONE, DateFormatError, format_timestamp, parse_day, parse_timestamp
from xrides.ride.fields import (
    COORDINATE_PAIRS,
    FIELD_ALIASES,
    FIELDS_BY_NAME,
    INT32_MAX,
    INT64_MAX,
    MAX_EXTRA_NAME,
    MAX_EXTRAS,
    ONE_OF,
    RIDE_FIELDS,
    FieldSpec,
    Kind,
)

_PY_TYPE_NAMES = {
    Kind.ID: "<class 'int'>",
    Kind.INT: "<class 'int'>",
    Kind.FLAG: "<class 'int'>",
    Kind.LATITUDE: "<class 'float'>",
    Kind.LONGITUDE: "<class 'float'>",
    Kind.TIMESTAMP: "<class 'str'>",
}
_RANGES = {Kind.LATITUDE: (-90.0, 90.0), Kind.LONGITUDE: (-180.0, 180.0)}
DATE_FORMAT_HINT = "please send month/date/year hour:minute:seconds "


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule of one field: what was expected and what came instead."""

    field: str
    code: str  # missing | null | type_mismatch | format_mismatch | out_of_range | unknown_field | pair
    expected: str
    received: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {
            "field": self.field,
            "code": self.code,
            "expected": self.expected,
            "received": self.received,
            "message": self.message,
        }


class RideValidationError(InvalidInput):
    """A ride broke the contract. ``errors`` holds every problem found, in field order."""

    http_status: ClassVar[int] = 422
    code: ClassVar[str] = "validation_failed"

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Ride:
    """One ride, typed and normalised (timestamps are aware UTC datetimes)."""

    booking_id: int
    user_id: int
    vehicle_model_id: int
    package_id: int | None
    travel_type_id: int
    from_area_id: int | None
    to_area_id: int | None
    from_city_id: int | None
    to_city_id: int | None
    from_date: datetime
    to_date: datetime | None
    online_booking: int
    mobile_site_booking: int
    booking_created: datetime
    from_lat: float | None
    from_long: float | None
    to_lat: float | None
    to_long: float | None
    driver_id: int
    car_cancellation: int = 0
    # Not fields of the contract, what the parser learned beside them:
    to_date_day: date | None = None  # to_date came as a bare date: the day (to_date is null)
    extras: dict[str, Any] | None = None  # unknown fields, kept as sent (never strict)

    def to_wire(self) -> dict[str, Any]:
        """The canonical JSON-ready dict: field order of the contract, timestamps in UTC ISO 8601,
        a bare date as ``YYYY-MM-DD`` (it parses back to the same day). Extras travel beside it."""
        out: dict[str, Any] = {}
        for spec in RIDE_FIELDS:
            value = getattr(self, spec.name)
            if isinstance(value, datetime):
                value = format_timestamp(value)
            elif value is None and spec.date_only:
                day = getattr(self, f"{spec.name}_day")
                value = day.isoformat() if day is not None else None
            out[spec.name] = value
        return out

    def day_of(self, name: str) -> date | None:
        """The bare date a ``date_only`` field came as (None when it had a time, or nothing)."""
        day: date | None = getattr(self, f"{name}_day")
        return day


RIDE_ATTRIBUTES: tuple[str, ...] = tuple(f.name for f in RIDE_FIELDS)
assert all(f"{f.name}_day" in Ride.__slots__ for f in RIDE_FIELDS if f.date_only), (
    "a date_only field needs a <name>_day attribute on Ride"
)


def _show(value: object) -> str:
    """A short, safe rendering of what the client sent, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value[:64] + ("..." if len(value) > 64 else ""))
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 32 else text[:29] + "..."
    return type(value).__name__.replace("dict", "object").replace("list", "array")


def _type_error(spec: FieldSpec, value: object) -> FieldError:
    expected = _PY_TYPE_NAMES[spec.kind]
    return FieldError(
        spec.name,
        "type_mismatch",
        expected,
        _show(value),
        f"{spec.name} data type mismatch, {spec.name} expected to be {expected}",
    )


def _check_field(spec: FieldSpec, value: object, zone: ZoneInfo) -> tuple[object, FieldError | None]:
    """Return the normalised value, or an error naming what was wrong."""
    if value is None:
        if spec.nullable:
            return None, None
        return None, FieldError(
            spec.name,
            "null",
            _PY_TYPE_NAMES[spec.kind],
            "null",
            f"{spec.name} must not be null, {spec.name} expected to be {_PY_TYPE_NAMES[spec.kind]}",
        )
    if spec.kind is Kind.TIMESTAMP:
        return _check_timestamp(spec, value, zone)
    if spec.kind in (Kind.LATITUDE, Kind.LONGITUDE):
        return _check_coordinate(spec, value)
    return _check_integer(spec, value)


def _check_timestamp(spec: FieldSpec, value: object, zone: ZoneInfo) -> tuple[object, FieldError | None]:
    """An aware UTC datetime; for a ``date_only`` field a bare date is a ``date`` (the caller moves
    it to ``<name>_day``)."""
    if not isinstance(value, str):
        return None, _type_error(spec, value)
    try:
        return parse_timestamp(value, zone), None
    except DateFormatError:
        pass
    if spec.date_only:
        try:
            return parse_day(value), None
        except DateFormatError:
            pass
    expected = "month/day/year hour:minute[:second] or ISO 8601"
    return None, FieldError(
        spec.name,
        "format_mismatch",
        expected + (", or a bare date month/day/year" if spec.date_only else ""),
        _show(value),
        f"{spec.name} format mismatch, {DATE_FORMAT_HINT}",
    )


def _check_coordinate(spec: FieldSpec, value: object) -> tuple[object, FieldError | None]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, _type_error(spec, value)
    number = float(value)
    low, high = _RANGES[spec.kind]
    if not (math.isfinite(number) and low <= number <= high):
        return None, FieldError(
            spec.name,
            "out_of_range",
            f"{low:g}..{high:g}",
            _show(value),
            f"{spec.name} out of range, expected {low:g}..{high:g}",
        )
    return number, None


def _check_integer(spec: FieldSpec, value: object) -> tuple[object, FieldError | None]:
    """ID, INT and FLAG; bool is an int subclass in Python but never one on the wire."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None, _type_error(spec, value)
    if spec.kind is Kind.FLAG:
        if value not in (0, 1):
            return None, FieldError(
                spec.name, "out_of_range", "0 or 1", _show(value), f"{spec.name} must be 0 or 1"
            )
        return value, None
    high = INT32_MAX if spec.kind is Kind.INT else INT64_MAX
    if not 0 <= value <= high:
        return None, FieldError(
            spec.name,
            "out_of_range",
            f"0..{high}",
            _show(value),
            f"{spec.name} out of range, expected 0..{high}",
        )
    if spec.name == "booking_id" and value == 0:
        return None, FieldError(
            spec.name, "out_of_range", f"1..{INT64_MAX}", "0", f"{spec.name} out of range, expected > 0"
        )
    return value, None


def _unknown_field_error(name: str) -> FieldError:
    close = difflib.get_close_matches(name, FIELDS_BY_NAME, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return FieldError(
        name,
        "unknown_field",
        "one of the ride fields",
        name[:64],
        f"{name[:64]} is not a ride field{hint}",
    )


def parse_ride(data: object, zone: ZoneInfo | None = None, strict: bool = False) -> Ride:
    """Validate one decoded JSON value as a ride; raise :class:`RideValidationError` listing all errors.

    Unknown fields are kept in ``Ride.extras`` (``strict``: refused, naming the closest field).

    A ride that is valid as sent goes through :func:`_accept_valid`, a straight-line check; anything
    it does not accept at once (an error, an alias, an extra field, a bare date) takes the full
    path below, which is the one that decides and explains. Both run for every ride the API
    accepts and every message the persister stores, so the fast one is worth its lines: 21 -> 6 us.
    """
    zone = zone or ZoneInfo(DEFAULT_ZONE)
    if type(data) is dict and data.keys() <= _CANONICAL_NAMES:
        values = _accept_valid(data, zone)
        if values is not None:
            return Ride(*values)
    return _parse_ride_explained(data, zone, strict)


_MISSING = object()
_CANONICAL_NAMES = frozenset(FIELDS_BY_NAME)
_TIMESTAMP, _COORDINATE, _INTEGER = 0, 1, 2
_LIMITS = {Kind.ID: (0, INT64_MAX), Kind.INT: (0, INT32_MAX), Kind.FLAG: (0, 1), **_RANGES}
# (name, check, nullable, required, default, low, high) in field order, precomputed once
_FAST_FIELDS = tuple(
    (
        spec.name,
        _TIMESTAMP if spec.kind is Kind.TIMESTAMP else _COORDINATE if spec.kind in _RANGES else _INTEGER,
        spec.nullable,
        spec.required,
        spec.default,
        1 if spec.name == "booking_id" else _LIMITS.get(spec.kind, (0, 0))[0],
        _LIMITS.get(spec.kind, (0, 0))[1],
    )
    for spec in RIDE_FIELDS
)
_PAIR_POSITIONS = tuple(
    (RIDE_ATTRIBUTES.index(lat), RIDE_ATTRIBUTES.index(lon)) for lat, lon in COORDINATE_PAIRS
)
_ONE_OF_POSITIONS = tuple((RIDE_ATTRIBUTES.index(a), RIDE_ATTRIBUTES.index(b)) for a, b in ONE_OF)
assert tuple(spec.name for spec in RIDE_FIELDS) == RIDE_ATTRIBUTES, "Ride must follow RIDE_FIELDS"


@functools.lru_cache(maxsize=1 << 16)
def _timestamp(text: str, zone: ZoneInfo) -> datetime:
    """Rides repeat timestamps (minute resolution, one day's worth at a time): parse each once."""
    return parse_timestamp(text, zone)


def _accept_valid(  # noqa: C901, PLR0911, PLR0912 - one flat loop on purpose: the hot path (see parse_ride)
    data: dict[str, object], zone: ZoneInfo
) -> list[Any] | None:
    """The ride's values in field order when every field is valid as sent, else None (no verdict)."""
    values: list[Any] = []
    get = data.get
    for name, check, nullable, required, default, low, high in _FAST_FIELDS:
        value = get(name, _MISSING)
        if value is _MISSING:
            if required:
                return None
            values.append(default)
            continue
        if value is None:
            if not nullable:
                return None
            values.append(None)
            continue
        kind = type(value)
        if check == _INTEGER:
            if kind is not int or not low <= value <= high:  # type: ignore[operator]
                return None
        elif check == _COORDINATE:
            if kind is int:
                value = float(value)  # type: ignore[arg-type]
            elif kind is not float:
                return None
            if not low <= value <= high:  # type: ignore[operator]  # NaN and inf fail this too
                return None
        else:
            if kind is not str:
                return None
            try:
                value = _timestamp(value, zone)
            except DateFormatError:
                return None
        values.append(value)
    for lat, lon in _PAIR_POSITIONS:
        if (values[lat] is None) != (values[lon] is None):
            return None
    for first, second in _ONE_OF_POSITIONS:
        if values[first] is None and values[second] is None:
            return None
    return values


def _parse_ride_explained(data: object, zone: ZoneInfo, strict: bool) -> Ride:
    """The full check: every rule, every error collected and worded for the client."""
    if not isinstance(data, dict):
        raise RideValidationError(
            [FieldError("$", "type_mismatch", "object", _show(data), "a ride must be a JSON object")]
        )
    given, extras, extra_errors = _sort_keys(data, strict)
    errors: list[FieldError] = []
    values: dict[str, object] = {}
    for spec in RIDE_FIELDS:
        if spec.name not in given:
            if spec.required:
                errors.append(
                    FieldError(
                        spec.name,
                        "missing",
                        _PY_TYPE_NAMES[spec.kind],
                        "nothing",
                        f"{spec.name} is missing",
                    )
                )
            else:
                values[spec.name] = spec.default
            continue
        value, error = _check_field(spec, given[spec.name], zone)
        if error:
            errors.append(error)
        values[spec.name] = value
    errors += _pair_errors(given) + _one_of_errors(given, values)
    if errors or extra_errors:
        raise RideValidationError(errors + extra_errors)
    days = {}
    for spec in RIDE_FIELDS:  # a bare date: the day beside a null timestamp
        value = values[spec.name]
        if spec.date_only and isinstance(value, date) and not isinstance(value, datetime):
            days[f"{spec.name}_day"] = value
            values[spec.name] = None
    return Ride(**values, **days, extras=extras or None)  # type: ignore[arg-type]


def _sort_keys(
    data: dict[str, object], strict: bool
) -> tuple[dict[str, object], dict[str, Any], list[FieldError]]:
    """The contract's fields (aliases resolved), the unknown ones kept as extras, and the errors of
    keys (a field given twice; unknown ones when ``strict`` or past the limits)."""
    given: dict[str, object] = {}
    extras: dict[str, Any] = {}
    errors: list[FieldError] = []
    for key, value in data.items():
        name = FIELD_ALIASES.get(key, key)
        if name in given:
            errors.append(FieldError(name, "duplicate", "one value", key, f"{name} given twice ({key})"))
        elif name in FIELDS_BY_NAME:
            given[name] = value
        elif strict:
            errors.append(_unknown_field_error(str(key)))
        elif len(key) > MAX_EXTRA_NAME or len(extras) >= MAX_EXTRAS:
            errors.append(
                FieldError(
                    key[:MAX_EXTRA_NAME],
                    "too_many_unknown_fields",
                    f"at most {MAX_EXTRAS} unknown fields of up to {MAX_EXTRA_NAME} characters",
                    _show(key),
                    f"unknown fields are kept up to {MAX_EXTRAS}, named in {MAX_EXTRA_NAME} characters",
                )
            )
        elif _has_nul(key) or _has_nul(value):
            errors.append(
                FieldError(
                    key[:MAX_EXTRA_NAME].replace("\x00", "\ufffd"),
                    "nul_character",
                    "text without U+0000",
                    "a text with U+0000",
                    "unknown fields are kept in PostgreSQL's jsonb, which cannot hold U+0000",
                )
            )
        else:
            extras[key] = value
    return given, extras, errors


def _has_nul(value: object) -> bool:
    """True when a kept value holds U+0000 anywhere (its keys, its strings, at any depth)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _pair_errors(given: dict[str, object]) -> list[FieldError]:
    errors = []
    for lat, lon in COORDINATE_PAIRS:
        if lat in given and lon in given and (given[lat] is None) != (given[lon] is None):
            errors.append(
                FieldError(
                    lat,
                    "pair",
                    f"{lat} and {lon} both set or both null",
                    f"{_show(given[lat])}, {_show(given[lon])}",
                    f"{lat} and {lon} must both be set or both be null",
                )
            )
    return errors


def _one_of_errors(given: dict[str, object], values: dict[str, object]) -> list[FieldError]:
    """A ride needs one of each pair (a pickup area, or a pickup city); a field that was given but
    broke its own rule is already reported."""
    errors = []
    for first, second in ONE_OF:
        if values.get(first) is None and values.get(second) is None:
            if given.get(first) is not None or given.get(second) is not None:
                continue
            errors.append(
                FieldError(
                    first,
                    "missing",
                    f"{first} or {second}",
                    "null" if first in given else "nothing",
                    f"{first} is missing, and {second} is not set either: send one of them",
                )
            )
    return errors


def warnings_for(ride: Ride) -> list[FieldError]:
    """What the API tells a client about a ride it accepted: each unknown field kept (with the
    closest known field), so a typo is seen at once."""
    out = []
    for name in ride.extras or {}:
        error = _unknown_field_error(name)
        out.append(
            FieldError(
                name, "unknown_field_kept", error.expected, error.received, error.message + "; kept as sent"
            )
        )
    return out
