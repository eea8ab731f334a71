"""The archiver's pure parts: schema against the system of record, day arithmetic, merge, manifest."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.archive import cutoff_day, decode_parquet, encode_parquet, index_day, index_name, merge_latest
from archiver.settings import ArchiverSettings
from xrides.archive.manifest import Manifest, ManifestObject, describe_schema
from xrides.archive.schema import COLUMNS, archive_schema, canonical, day_bounds, rows_to_table
from xrides.db.rides import ROW_COLUMNS
from xrides.ride import postgres_columns

MIGRATIONS = Path(__file__).resolve().parents[2] / "xrides" / "db" / "migrations"
MIGRATION = MIGRATIONS / "0001_schema.sql"


def _row(booking_id: int, version: int, offset: int = 0, cancelled: int = 0) -> tuple[object, ...]:
    moment = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
    values: dict[str, object] = {
        "booking_id": booking_id,
        "user_id": 7,
        "vehicle_model_id": 12,
        "package_id": None,
        "travel_type_id": 2,
        "from_area_id": 393,
        "to_area_id": None,
        "from_city_id": None,
        "to_city_id": None,
        "from_date": moment,
        "to_date": None,
        "online_booking": 1,
        "mobile_site_booking": 0,
        "booking_created": moment,
        "from_lat": Decimal("12.97161"),
        "from_long": Decimal("77.59456"),
        "to_lat": None,
        "to_long": None,
        "driver_id": 0,
        "car_cancellation": cancelled,
        "to_date_day": None,
        "quality": ["no_coordinates"] if cancelled else [],
        "extras": None,
        "contract_version": 2,
        "kafka_partition": 0,
        "kafka_offset": offset,
        "version": version,
        "source": "api",
        "received_at": moment,
        "stored_at": moment,
    }
    return tuple(values[c] for c in COLUMNS)


def _created_columns() -> dict[str, bool]:
    """cab_rides' columns as the numbered migrations create them: name -> NOT NULL."""
    sql = MIGRATION.read_text()
    body = sql[sql.index("CREATE TABLE cab_rides") : sql.index("PRIMARY KEY (booking_id, from_date)")]
    columns = {
        name: "NOT NULL" in rest
        for name, rest in re.findall(
            r"^\s+([a-z_]+)\s+((?:bigint|integer|smallint|numeric|timestamp|text)[^\n]*)", body, re.M
        )
    }
    for later in sorted(MIGRATIONS.glob("0*.sql"))[1:]:
        for name, rest in re.findall(r"ADD COLUMN IF NOT EXISTS ([a-z_]+) ([^;]*);", later.read_text()):
            columns[name] = "NOT NULL" in rest
    return columns


def test_archive_columns_are_the_system_of_records_columns() -> None:
    assert COLUMNS == ROW_COLUMNS
    assert set(_created_columns()) | set(postgres_columns()) == set(COLUMNS)


def test_not_null_columns_are_not_nullable_in_parquet() -> None:
    created = _created_columns()
    contract = {name: not nullable for name, (_, nullable) in postgres_columns().items()}
    not_null = {name for name, required in {**created, **contract}.items() if required}
    assert {f.name for f in archive_schema() if not f.nullable} == not_null


def test_cutoff_is_the_first_day_the_hot_window_still_touches() -> None:
    at = ArchiverSettings(reference_time="2026-06-01T06:00:00+00:00", hot_days=60)
    assert cutoff_day(at) == date(2026, 4, 2)  # 2026-04-02T06:00 is the window's oldest moment
    midnight = ArchiverSettings(reference_time="2026-06-01T00:00:00", hot_days=60)
    assert cutoff_day(midnight) == date(2026, 4, 2)  # naive means UTC; 04-01 is then wholly outside
    assert day_bounds(date(2026, 4, 1))[1] == datetime(2026, 4, 2, tzinfo=UTC)


def test_index_names_round_trip() -> None:
    assert index_name("rides-", date(2026, 3, 9)) == "rides-2026.03.09"
    assert index_day("rides-", "rides-2026.03.09") == date(2026, 3, 9)
    assert index_day("rides-", "rides-template-x") is None


def test_rows_become_typed_columns_and_coordinates_doubles() -> None:
    table = rows_to_table([_row(1, 10)])
    assert table.schema.equals(archive_schema())
    assert table.column("from_lat").to_pylist() == [12.97161]
    assert table.column("to_lat").to_pylist() == [None]
    assert table.column("from_date").type == pa.timestamp("us", tz="UTC")


def test_parquet_round_trip_is_exact_and_zstd(tmp_path: Path) -> None:
    table = canonical(rows_to_table([_row(i, 10 + i) for i in range(1000, 0, -1)]))
    data = encode_parquet(table, 256)
    back = canonical(decode_parquet(data))
    assert back.equals(table)
    (tmp_path / "x.parquet").write_bytes(data)
    meta = pq.ParquetFile(tmp_path / "x.parquet").metadata
    assert meta.num_row_groups == 4
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert back.column("booking_id").to_pylist() == sorted(back.column("booking_id").to_pylist())


def test_merge_keeps_the_newest_version_of_each_booking() -> None:
    archived = rows_to_table([_row(1, 10), _row(2, 10), _row(3, 10)])
    late = rows_to_table([_row(2, 20, cancelled=1), _row(3, 5, cancelled=1), _row(4, 10)])
    merged = merge_latest(archived, late)
    rows = {r["booking_id"]: r for r in merged.to_pylist()}
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[2]["car_cancellation"] == 1  # the newer version wins
    assert rows[3]["car_cancellation"] == 0  # an older replay loses
    same_version = rows_to_table([_row(5, 10, offset=1), _row(5, 10, offset=9, cancelled=1)])
    assert merge_latest(same_version).to_pylist()[0]["kafka_offset"] == 9


def test_manifest_round_trip() -> None:
    manifest = Manifest(
        day=date(2026, 1, 5),
        generation=2,
        rows=3,
        min_booking_id=1,
        max_booking_id=9,
        objects=(ManifestObject("rides/dt=2026-01-05/part-g00002-00000.parquet", 3, 1234, "ab" * 32),),
        schema_version=1,
        columns=describe_schema(archive_schema()),
        source_query="SELECT ...",
        source="postgres",
        created_at="2026-11-29T00:00:00+00:00",
    )
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.total_bytes == 1234
    assert replace(manifest, generation=3) != manifest
