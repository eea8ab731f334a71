"""The contract's versions and its BACKWARD compatibility rule (xrides/ride/contract.py), and what a
new optional field brings along: every schema derived from the field table follows it."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pytest

from xrides.archive.schema import align, archive_schema, readable
from xrides.db.rides import apply_function_sql, contract_columns_sql, row_columns
from xrides.ride import RIDE_FIELDS, FieldSpec, Kind, ride_json_schema
from xrides.ride.contract import check_backward, describe, load_lock, problems_against_lock
from xrides.ride.fields import CONTRACT_VERSION
from xrides.search.templates import rides_template

FARE = FieldSpec("fare_inr", Kind.INT, True, "Fare in rupees", since=CONTRACT_VERSION + 1)
WITH_FARE = (*RIDE_FIELDS, FARE)


def test_the_current_table_is_the_locked_one() -> None:
    assert problems_against_lock() == []
    lock = load_lock()
    assert max(lock) == CONTRACT_VERSION
    for version in sorted(lock)[1:]:  # every released version was a compatible step
        assert check_backward(lock[version - 1], lock[version], version - 1, version) == []


def test_an_optional_field_with_the_next_version_is_compatible() -> None:
    assert problems_against_lock(WITH_FARE, CONTRACT_VERSION + 1) == []


@pytest.mark.parametrize(
    ("fields", "version", "problem"),
    [
        (WITH_FARE, CONTRACT_VERSION, "is locked and the table differs"),
        ((*RIDE_FIELDS, replace(FARE, nullable=False)), CONTRACT_VERSION + 1, "new and required"),
        ((*RIDE_FIELDS, replace(FARE, since=1)), CONTRACT_VERSION + 1, "since must be the new version"),
        (RIDE_FIELDS[1:], CONTRACT_VERSION + 1, "booking_id was removed"),
        (
            tuple(replace(f, kind=Kind.INT) if f.name == "user_id" else f for f in RIDE_FIELDS),
            CONTRACT_VERSION + 1,
            "user_id changed kind",
        ),
        (
            tuple(replace(f, nullable=False) if f.name == "to_date" else f for f in RIDE_FIELDS),
            CONTRACT_VERSION + 1,
            "to_date became non-null",
        ),
        (
            tuple(replace(f, date_only=False) if f.name == "to_date" else f for f in RIDE_FIELDS),
            CONTRACT_VERSION + 1,
            "no longer accepts a bare date",
        ),
    ],
)
def test_breaking_changes_are_refused(fields: tuple[FieldSpec, ...], version: int, problem: str) -> None:
    problems = problems_against_lock(fields, version)
    assert any(problem in p for p in problems), problems


def test_a_new_field_brings_the_column_the_function_the_mapping_the_schemas() -> None:
    assert "ADD COLUMN IF NOT EXISTS fare_inr integer;" in contract_columns_sql(WITH_FARE)
    assert "fare_inr" in row_columns(WITH_FARE)
    assert "w.fare_inr" in apply_function_sql(WITH_FARE)
    assert rides_template("r-", WITH_FARE)["template"]["mappings"]["properties"]["fare_inr"] == {
        "type": "integer"
    }
    assert ride_json_schema(WITH_FARE)["properties"]["fare_inr"]["type"] == ["integer", "null"]
    assert archive_schema(WITH_FARE).field("fare_inr").type == pa.int32()
    assert describe(WITH_FARE)["fare_inr"]["since"] == CONTRACT_VERSION + 1


def test_a_file_written_before_a_column_existed_is_read_with_the_old_rows_values() -> None:
    new = archive_schema(WITH_FARE)
    old = archive_schema()
    rows = old.empty_table().to_pylist()
    table = pa.Table.from_pylist(rows, schema=old)
    assert readable(old, new) == []
    assert align(table, new).schema.equals(new)
    # a column that changed type is not readable as the new schema
    changed = pa.schema([pa.field("booking_id", pa.string())])
    assert readable(changed, new) == ["column booking_id is string, the archive schema says int64"]
    # what rows stored before contract 2 hold in PostgreSQL (migration 0005's defaults)
    before_v2 = pa.schema([f for f in old if f.name not in ("quality", "contract_version")])
    one = pa.Table.from_pylist([dict.fromkeys(before_v2.names)], schema=before_v2)
    aligned = align(one, old).to_pylist()[0]
    assert (aligned["quality"], aligned["contract_version"]) == ([], 1)
