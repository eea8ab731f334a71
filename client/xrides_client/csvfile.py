"""XRides' CSV exports as rides, converting only what is unambiguous.

The platform is the judge of a ride, so this reader never decides for it: a cell that is clearly a
number in a numeric column becomes that number; anything else is sent as the text it was, and the
platform refuses it with its own message (``vehicle_model_id data type mismatch, ...``). A ride is
never dropped or coerced here. ``NULL`` and empty cells are null; dates stay the text XRides wrote
(``1/1/2013 2:00``), which the platform parses in its own zone. A line that does not fit the header
(more or fewer cells) is reported as :class:`Unreadable`, with its line number.

The column kinds mirror the platform's field table (``xrides/ride/fields.py``); a test checks that
they agree.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TextIO

INT_COLUMNS = frozenset(
    {
        "booking_id",
        "user_id",
        "vehicle_model_id",
        "package_id",
        "travel_type_id",
        "from_area_id",
        "to_area_id",
        "from_city_id",
        "to_city_id",
        "online_booking",
        "mobile_site_booking",
        "driver_id",
        "car_cancellation",
        "Car_Cancellation",  # the historical exports' spelling, which the API accepts as an alias
    }
)
FLOAT_COLUMNS = frozenset({"from_lat", "from_long", "to_lat", "to_long"})
TEXT_COLUMNS = frozenset({"from_date", "to_date", "booking_created"})

NULL = "NULL"
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line of the input that is not a ride: counted and reported, never sent."""

    line: int
    reason: str


Row = dict[str, object]


def convert(column: str, cell: str) -> object:
    text = cell.strip()
    if not text or text == NULL:
        return None
    if column in INT_COLUMNS:
        return int(text) if _INT.fullmatch(text) else cell
    if column in FLOAT_COLUMNS and _FLOAT.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else cell
    return cell


def read_csv(stream: TextIO, defaults: Mapping[str, object] | None = None) -> Iterator[Row | Unreadable]:
    """Rides from a CSV with a header row; open the file with ``newline=""`` (CRLF is then handled).

    ``defaults`` fill fields the file has no column for (``driver_id``, say, which the prototype's
    exports lack and the platform requires); they never replace a cell, not even an empty one.
    """
    reader = csv.reader(stream)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield Unreadable(reader.line_num, f"unreadable header: {exc}")
        return
    if header is None:
        return
    columns = [name.strip() for name in header]
    if len(set(columns)) != len(columns):
        yield Unreadable(1, "the header names a column twice")
        return
    extra = {k: v for k, v in (defaults or {}).items() if k not in columns}
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            yield Unreadable(reader.line_num, f"unreadable CSV: {exc}")
            continue
        if cells is None:
            return
        if not cells:  # a blank line
            continue
        if len(cells) != len(columns):
            yield Unreadable(reader.line_num, f"{len(cells)} cells for {len(columns)} columns")
            continue
        row: Row = {column: convert(column, cell) for column, cell in zip(columns, cells, strict=True)}
        row.update(extra)
        yield row
