"""The ride contract: the prototype's examples verbatim, every field's edges, and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xrides.ride import (
    RIDE_FIELDS,
    Kind,
    Ride,
    RideEnvelope,
    RideValidationError,
    decode_envelope,
    example_ride,
    parse_ride,
)
from xrides.ride.model import RIDE_ATTRIBUTES, _accept_valid, _parse_ride_explained, warnings_for
from xrides.ride.quality import quality_flags

KOLKATA = ZoneInfo("Asia/Kolkata")


def errors_of(data: object) -> list[dict[str, str]]:
    with pytest.raises(RideValidationError) as info:
        parse_ride(data)
    return [e.as_dict() for e in info.value.errors]


def test_dataclass_matches_field_table() -> None:
    assert tuple(f.name for f in RIDE_FIELDS) == RIDE_ATTRIBUTES


def test_prototype_example_is_accepted() -> None:
    ride = parse_ride(example_ride())
    assert ride.booking_id == 132512
    assert ride.from_date == datetime(2013, 1, 1, 2, 0, tzinfo=KOLKATA)
    assert ride.booking_created == datetime(2013, 1, 1, 1, 39, tzinfo=KOLKATA)
    assert ride.to_date is None
    assert ride.car_cancellation == 0


def test_prototype_type_mismatch_message_verbatim() -> None:
    errors = errors_of({**example_ride(), "vehicle_model_id": "28"})
    assert len(errors) == 1
    assert errors[0]["message"] == (
        "vehicle_model_id data type mismatch, vehicle_model_id expected to be <class 'int'>"
    )
    assert errors[0]["field"] == "vehicle_model_id"
    assert errors[0]["received"] == "'28'"


def test_prototype_date_mismatch_message_verbatim() -> None:
    errors = errors_of({**example_ride(), "booking_created": "1/1-2013 1:39:00"})
    assert [e["message"] for e in errors] == [
        "booking_created format mismatch, please send month/date/year hour:minute:seconds "
    ]


def test_all_errors_reported_together_in_field_order() -> None:
    data = {**example_ride(), "user_id": "x", "from_date": "yesterday", "to_lat": 95.0, "fromlat": 1}
    data.pop("driver_id")
    fields = [e["field"] for e in errors_of(data)]
    assert fields == ["user_id", "from_date", "to_lat", "driver_id"]  # fromlat is kept, not refused
    with pytest.raises(RideValidationError) as info:
        parse_ride(data, strict=True)
    assert [e.field for e in info.value.errors] == ["user_id", "from_date", "to_lat", "driver_id", "fromlat"]


def test_unknown_fields_are_kept_and_named_with_the_close_one() -> None:
    ride = parse_ride({**example_ride(), "from_lattitude": 1.0, "fare_inr": 640})
    assert ride.extras == {"from_lattitude": 1.0, "fare_inr": 640}
    (typo, fare) = warnings_for(ride)
    assert typo.code == "unknown_field_kept" and "did you mean from_lat?" in typo.message
    assert fare.field == "fare_inr" and "kept as sent" in fare.message
    assert warnings_for(parse_ride(example_ride())) == []


def test_strict_refuses_unknown_fields_naming_the_close_one() -> None:
    with pytest.raises(RideValidationError) as info:
        parse_ride({**example_ride(), "from_lattitude": 1.0}, strict=True)
    (error,) = info.value.errors
    assert error.code == "unknown_field"
    assert "did you mean from_lat?" in error.message


def test_unknown_fields_are_kept_within_limits() -> None:
    many = {f"x{i}": i for i in range(70)}
    with pytest.raises(RideValidationError) as info:
        parse_ride({**example_ride(), **many})
    assert {e.code for e in info.value.errors} == {"too_many_unknown_fields"}
    assert len(parse_ride({**example_ride(), **dict(list(many.items())[:64])}).extras or {}) == 64


def test_a_bare_date_keeps_its_precision() -> None:
    for text in ("1/2/2013", "2013-01-02"):
        ride = parse_ride({**example_ride(), "to_date": text})
        assert ride.to_date is None
        assert ride.to_date_day == date(2013, 1, 2)
        assert ride.to_wire()["to_date"] == "2013-01-02"
        assert parse_ride(orjson.loads(orjson.dumps(ride.to_wire()))) == ride
    # only a date_only field takes a bare date
    (error,) = errors_of({**example_ride(), "from_date": "1/1/2013"})
    assert (error["field"], error["code"]) == ("from_date", "format_mismatch")
    (error,) = errors_of({**example_ride(), "to_date": "2/30/2013"})
    assert error["code"] == "format_mismatch"


def test_minutes_without_seconds_are_accepted() -> None:
    ride = parse_ride({**example_ride(), "to_date": "1/1/2013 9:30"})
    assert ride.to_date == datetime(2013, 1, 1, 4, 0, tzinfo=UTC)
    assert ride.to_date_day is None


def test_a_pickup_city_stands_in_for_a_pickup_area() -> None:
    ride = parse_ride({**example_ride(), "from_area_id": None, "from_city_id": 15, "from_lat": None,
                       "from_long": None, "to_lat": None, "to_long": None})  # fmt: skip
    assert (ride.from_area_id, ride.from_city_id) == (None, 15)
    assert quality_flags(ride) == ("no_pickup_area", "no_coordinates", "missing_coordinates")
    (error,) = errors_of({**example_ride(), "from_area_id": None})
    assert (error["field"], error["code"]) == ("from_area_id", "missing")
    assert "from_city_id" in error["message"]
    absent = example_ride()
    del absent["from_area_id"]
    (error,) = errors_of(absent)
    assert error["code"] == "missing"


def test_quality_flags_of_the_prototype_ride_and_a_bare_drop_off_day() -> None:
    assert quality_flags(parse_ride(example_ride())) == ()
    ride = parse_ride({**example_ride(), "to_date": "1/1/2013", "booking_created": "1/1/2013 3:00"})
    assert quality_flags(ride) == ("to_date_date_only", "booked_after_pickup")


def test_historical_car_cancellation_alias() -> None:
    assert parse_ride({**example_ride(), "Car_Cancellation": 1}).car_cancellation == 1
    (error,) = errors_of({**example_ride(), "Car_Cancellation": 1, "car_cancellation": 0})
    assert error["code"] == "duplicate"


@pytest.mark.parametrize("value", [True, False, 1.0, "1", [1], {"a": 1}])
def test_integers_are_strict(value: object) -> None:
    (error,) = errors_of({**example_ride(), "user_id": value})
    assert error["code"] == "type_mismatch"


@pytest.mark.parametrize(
    ("field", "value"),
    [("booking_id", 0), ("user_id", -1), ("driver_id", 2**63), ("vehicle_model_id", 2**31)],
)
def test_id_ranges(field: str, value: int) -> None:
    (error,) = errors_of({**example_ride(), field: value})
    assert error["code"] == "out_of_range"


@pytest.mark.parametrize("value", [2, -1])
def test_flags_are_zero_or_one(value: int) -> None:
    (error,) = errors_of({**example_ride(), "online_booking": value})
    assert error["message"] == "online_booking must be 0 or 1"


@pytest.mark.parametrize(("field", "value"), [("from_lat", 90.01), ("from_long", -180.5), ("to_lat", -91)])
def test_coordinates_in_range(field: str, value: float) -> None:
    pair = {"from_lat": "from_long", "from_long": "from_lat", "to_lat": "to_long"}[field]
    data = {**example_ride(), field: value, pair: 10.0}
    (error,) = errors_of(data)
    assert (error["field"], error["code"]) == (field, "out_of_range")


def test_integer_coordinates_are_accepted_as_floats() -> None:
    ride = parse_ride({**example_ride(), "from_lat": 12, "from_long": 77})
    assert (ride.from_lat, ride.from_long) == (12.0, 77.0)


def test_coordinates_come_in_pairs() -> None:
    (error,) = errors_of({**example_ride(), "to_lat": None})
    assert error["code"] == "pair"
    both_null = parse_ride({**example_ride(), "to_lat": None, "to_long": None})
    assert both_null.to_lat is None


@pytest.mark.parametrize("field", [f.name for f in RIDE_FIELDS if not f.nullable and f.required])
def test_required_fields_reject_null_and_absence(field: str) -> None:
    (error,) = errors_of({**example_ride(), field: None})
    assert (error["field"], error["code"]) == (field, "null")
    data = example_ride()
    del data[field]
    (error,) = errors_of(data)
    assert (error["field"], error["code"]) == (field, "missing")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1/1/2013 2:00:00", datetime(2012, 12, 31, 20, 30, tzinfo=UTC)),
        ("1/1/2013 2:00", datetime(2012, 12, 31, 20, 30, tzinfo=UTC)),
        ("12/31/2013 23:59:59", datetime(2013, 12, 31, 18, 29, 59, tzinfo=UTC)),
        ("2013-01-01T02:00:00+05:30", datetime(2012, 12, 31, 20, 30, tzinfo=UTC)),
        ("2013-01-01T02:00:00Z", datetime(2013, 1, 1, 2, 0, tzinfo=UTC)),
        ("2013-01-01T02:00:00", datetime(2012, 12, 31, 20, 30, tzinfo=UTC)),
        ("2013-01-01 02:00:00.250+00:00", datetime(2013, 1, 1, 2, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_accepted_date_forms(text: str, expected: datetime) -> None:
    assert parse_ride({**example_ride(), "from_date": text}).from_date == expected


@pytest.mark.parametrize(
    "text",
    [
        "1/1-2013 1:39:00",
        "13/1/2013 1:00",
        "2/30/2013 1:00",
        "1/1/13 1:00",
        "1/1/1970 0:00",
        "",
        "2013",
        "2013-02-30",
        "1/1/1970",
        "1/1",
    ],
)
def test_rejected_date_forms(text: str) -> None:
    (error,) = errors_of({**example_ride(), "to_date": text})
    assert (error["field"], error["code"]) == ("to_date", "format_mismatch")


def test_zone_is_configurable() -> None:
    ride = parse_ride({**example_ride(), "from_date": "1/1/2013 2:00"}, ZoneInfo("UTC"))
    assert ride.from_date == datetime(2013, 1, 1, 2, 0, tzinfo=UTC)


def test_non_object_body() -> None:
    (error,) = errors_of([example_ride()])
    assert error["field"] == "$"


def test_envelope_round_trip() -> None:
    ride = parse_ride(example_ride())
    envelope = RideEnvelope(ride=ride, version=1_700_000_000_000_000)
    assert envelope.key() == b"132512"
    assert decode_envelope(envelope.encode()) == envelope


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"schema": 2}', b'{"schema": 1, "version": true, "ride": {}}']
)
def test_poisoned_envelopes_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_envelope(raw)


# --- properties -------------------------------------------------------------------------------

_timestamps = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


def _value_strategy(kind: Kind, nullable: bool) -> st.SearchStrategy[Any]:
    base: st.SearchStrategy[Any]
    if kind is Kind.ID:
        base = st.integers(1, 2**63 - 1)
    elif kind is Kind.INT:
        base = st.integers(0, 10_000)
    elif kind is Kind.FLAG:
        base = st.sampled_from([0, 1])
    elif kind is Kind.LATITUDE:
        base = st.floats(-90, 90, allow_nan=False)
    elif kind is Kind.LONGITUDE:
        base = st.floats(-180, 180, allow_nan=False)
    else:
        base = _timestamps
    return st.one_of(st.none(), base) if nullable else base


@st.composite
def valid_rides(draw: st.DrawFn) -> Ride:
    values = {f.name: draw(_value_strategy(f.kind, f.nullable)) for f in RIDE_FIELDS}
    for lat, lon in (("from_lat", "from_long"), ("to_lat", "to_long")):
        if values[lat] is None or values[lon] is None:
            values[lat] = values[lon] = None
    if values["from_area_id"] is None and values["from_city_id"] is None:
        values["from_city_id"] = draw(st.integers(1, 2**63 - 1))
    day = None
    if values["to_date"] is None and draw(st.booleans()):
        day = draw(st.dates(date(2001, 1, 1), date(2099, 12, 31)))
    extras = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(["fare_inr", "tip", "notes"]), st.integers(-(2**63), 2**63 - 1), min_size=1
        )
    )
    return Ride(**values, to_date_day=day, extras=extras)


@settings(max_examples=300)
@given(valid_rides())
def test_valid_rides_round_trip_through_json(ride: Ride) -> None:
    wire = orjson.loads(orjson.dumps({**ride.to_wire(), **(ride.extras or {})}))
    assert parse_ride(wire) == ride
    envelope = RideEnvelope(ride, 1_700_000_000_000_000)
    assert decode_envelope(envelope.encode()) == envelope


_bad_values = st.one_of(
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(), st.none()),
)


@settings(max_examples=300)
@given(valid_rides(), st.sampled_from(RIDE_FIELDS), _bad_values)
def test_mutated_rides_are_rejected_naming_the_field(ride: Ride, field: Any, bad: object) -> None:
    wire = ride.to_wire()
    if field.kind is Kind.TIMESTAMP and isinstance(bad, str):
        bad = "x" + bad  # a string starting with x is never a date
    wire[field.name] = bad
    with pytest.raises(RideValidationError) as info:
        parse_ride(wire)
    assert field.name in {e.field for e in info.value.errors}


def test_nullable_fields_may_be_left_out() -> None:
    data = {k: v for k, v in example_ride().items() if v is not None}
    data.pop("to_lat")
    data.pop("to_long")
    ride = parse_ride(data)
    assert (ride.package_id, ride.to_date, ride.to_lat, ride.to_long) == (None, None, None, None)


# The fast path (_accept_valid) must never accept what the full check refuses, and must build the
# same ride when both accept: every field against every edge value, then random multi-field edits.
_EDGES: list[object] = [
    None, True, False, -1, 0, 1, 2, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 90, 90.0, 90.5, -180, -180.5,
    0.5, float("nan"), float("inf"), 1e308, "", "1", "7/1/2013 8:00", "2013-07-01T08:00:00Z",
    "2013-07-01 08:00", "13/40/2013 8:00", "1/1/1999 0:00", "7/1/2013", "2013-07-01", [], {},
]  # fmt: skip


def _assert_paths_agree(wire: dict[str, object]) -> None:
    try:
        full: Ride | None = _parse_ride_explained(wire, KOLKATA, False)
    except RideValidationError:
        full = None
    fast = _accept_valid(wire, KOLKATA)
    if fast is not None:
        assert full is not None, f"the fast path accepted a ride the full check refuses: {wire}"
        assert Ride(*fast) == full
    if full is None:
        with pytest.raises(RideValidationError):
            parse_ride(wire, KOLKATA)
    else:
        assert parse_ride(wire, KOLKATA) == full


def test_fast_path_agrees_with_the_full_check_on_every_edge() -> None:
    base = example_ride()
    for spec in RIDE_FIELDS:
        for value in _EDGES:
            _assert_paths_agree({**base, spec.name: value})
        _assert_paths_agree({k: v for k, v in base.items() if k != spec.name})


@settings(max_examples=300)
@given(
    valid_rides(),
    st.dictionaries(st.sampled_from([f.name for f in RIDE_FIELDS]), st.sampled_from(_EDGES), max_size=4),
    st.sets(st.sampled_from([f.name for f in RIDE_FIELDS]), max_size=2),
)
def test_fast_path_agrees_with_the_full_check(ride: Ride, edits: dict[str, object], drop: set[str]) -> None:
    wire: dict[str, object] = {**ride.to_wire(), **edits}
    for name in drop:
        wire.pop(name, None)
    _assert_paths_agree(wire)


def test_an_unknown_field_holding_a_nul_is_refused_not_kept() -> None:
    """jsonb cannot hold U+0000: kept, it would stop the persister's batch; refused, the client is told."""
    for extra in ({"note": "a\x00b"}, {"nested": {"k": ["x", "\x00"]}}, {"n\x00me": 1}):
        with pytest.raises(RideValidationError) as info:
            parse_ride({**example_ride(), **extra})
        (error,) = info.value.errors
        assert error.code == "nul_character" and "\x00" not in error.field
    assert parse_ride({**example_ride(), "note": "a\\u0000b"}).extras == {"note": "a\\u0000b"}
