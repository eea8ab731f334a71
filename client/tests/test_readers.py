"""CSV and NDJSON into rides: convert only the unambiguous, never drop or coerce."""

from __future__ import annotations

import io
import json

import pytest
from xrides_client import Unreadable, read_csv, read_ndjson
from xrides_client.csvfile import FLOAT_COLUMNS, INT_COLUMNS, TEXT_COLUMNS, convert

from tests.helpers import HEADER, ROW


def csv_rows(text: str, **defaults: object) -> list[object]:
    return list(read_csv(io.StringIO(text, newline=""), defaults))


def test_a_prototype_row_with_crlf_line_ends() -> None:
    (row,) = csv_rows(f"{HEADER}\r\n{ROW}\r\n")
    assert row == {
        "booking_id": 132512,
        "user_id": 22177,
        "vehicle_model_id": 28,
        "package_id": None,
        "travel_type_id": 2,
        "from_area_id": 83,
        "to_area_id": 448,
        "from_city_id": None,
        "to_city_id": None,
        "from_date": "1/1/2013 2:00",
        "to_date": None,
        "online_booking": 0,
        "mobile_site_booking": 0,
        "booking_created": "1/1/2013 1:39",
        "from_lat": 12.92415,
        "from_long": 77.67229,
        "to_lat": 12.92732,
        "to_long": 77.63575,
        "Car_Cancellation": 0,
    }
    assert isinstance(row["from_lat"], float)


def test_a_non_numeric_int_is_sent_as_the_text_for_the_platform_to_refuse() -> None:
    (row,) = csv_rows(HEADER + "\r\n" + ROW.replace(",28,", ",abc,", 1) + "\r\n")
    assert isinstance(row, dict)
    assert row["vehicle_model_id"] == "abc"


@pytest.mark.parametrize(
    ("column", "cell", "expected"),
    [
        ("vehicle_model_id", "28", 28),
        ("vehicle_model_id", " 28 ", 28),
        ("vehicle_model_id", "28.0", "28.0"),
        ("vehicle_model_id", "1e3", "1e3"),
        ("vehicle_model_id", "-5", -5),  # the platform refuses it with its range message
        ("booking_id", "NULL", None),
        ("booking_id", "", None),
        ("booking_id", "  ", None),
        ("from_lat", "12", 12.0),
        ("from_lat", "north", "north"),
        ("from_lat", "1e999", "1e999"),  # not finite: not JSON, so kept as text
        ("from_lat", "nan", "nan"),
        ("from_date", "1/1/2013 2:00", "1/1/2013 2:00"),
        ("from_date", "NULL", None),
        ("unknown_column", "7", "7"),  # not ours to type; the platform names the unknown field
    ],
)
def test_cells(column: str, cell: str, expected: object) -> None:
    assert convert(column, cell) == expected
    assert type(convert(column, cell)) is type(expected)


def test_lines_that_do_not_fit_the_header_are_reported_not_sent() -> None:
    text = "a,booking_id\r\n1,2\r\n1,2,3\r\n\r\n4\r\n5,6\r\n"
    rows = csv_rows(text)
    assert rows == [
        {"a": "1", "booking_id": 2},
        Unreadable(3, "3 cells for 2 columns"),
        Unreadable(5, "1 cells for 2 columns"),
        {"a": "5", "booking_id": 6},
    ]


def test_a_quoted_cell_may_hold_a_line_break() -> None:
    rows = csv_rows('booking_id,note\r\n1,"two\r\nlines"\r\n2,x\r\n')
    assert rows == [{"booking_id": 1, "note": "two\r\nlines"}, {"booking_id": 2, "note": "x"}]


def test_defaults_fill_only_missing_columns() -> None:
    rows = csv_rows("booking_id,to_area_id\n1,\n", driver_id=0, to_area_id=5)
    assert rows == [{"booking_id": 1, "to_area_id": None, "driver_id": 0}]


def test_a_header_naming_a_column_twice_is_unreadable() -> None:
    assert csv_rows("a,a\n1,2\n") == [Unreadable(1, "the header names a column twice")]


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: object) -> None:
    data = ("\ufeff" + HEADER + "\r\n" + ROW + "\r\n").encode()
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    (row,) = list(read_csv(stream))
    assert isinstance(row, dict)
    assert row["booking_id"] == 132512


def test_ndjson_lines_are_sent_as_they_are() -> None:
    text = '{"booking_id": 1, "vehicle_model_id": "28"}\n\n[1]\nnot json\n{"x": NaN}\n{"booking_id": 2}\n'
    rows = list(read_ndjson(io.StringIO(text), {"driver_id": 0}))
    assert rows[0] == {"booking_id": 1, "vehicle_model_id": "28", "driver_id": 0}
    assert rows[1] == Unreadable(3, "a JSON list, not an object")
    assert isinstance(rows[2], Unreadable)
    assert rows[2].line == 4
    assert isinstance(rows[3], Unreadable)
    assert "NaN" in rows[3].reason
    assert rows[4] == {"booking_id": 2, "driver_id": 0}
    json.dumps(rows[0], allow_nan=False)


def test_the_column_kinds_agree_with_the_platforms_field_table() -> None:
    fields = pytest.importorskip("xrides.ride.fields", reason="the platform's package is not installed")
    kinds = {f.name: f.kind for f in fields.RIDE_FIELDS}
    ints = {
        name for name, kind in kinds.items() if kind in (fields.Kind.ID, fields.Kind.INT, fields.Kind.FLAG)
    }
    floats = {name for name, kind in kinds.items() if kind in (fields.Kind.LATITUDE, fields.Kind.LONGITUDE)}
    texts = {name for name, kind in kinds.items() if kind is fields.Kind.TIMESTAMP}
    assert set(kinds) == ints | floats | texts
    assert ints | set(fields.FIELD_ALIASES) == INT_COLUMNS
    assert floats == FLOAT_COLUMNS
    assert texts == TEXT_COLUMNS
