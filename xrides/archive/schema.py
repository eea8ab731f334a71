"""The archive's columns: every column of ``cab_rides``, typed from the one ride model.

The ride's own columns come from :func:`xrides.ride.parquet_schema` (the contract's field table);
the ingestion metadata the persister stores beside them (where the ride was in Kafka, its version,
who sent it, when it was received and stored) is appended, so an archived day is the system of
record's rows, column for column. PostgreSQL's ``numeric`` coordinates become ``double``: they were
parsed from JSON numbers, and ``float(Decimal(repr(x))) == x`` holds for every one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC as _UTC
from datetime import date, datetime, time, timedelta
from typing import Any

import pyarrow as pa

from xrides.ride import RIDE_FIELDS, Kind, parquet_schema
from xrides.ride.schemas import Fields

# 2: contract 2's stored columns (to_date_day, quality, extras, contract_version). Files of an
# earlier version lack them (and any field added since); :func:`align` reads them as the rows
# PostgreSQL holds for such rides: the defaults below.
SCHEMA_VERSION = 2

STORED_FIELDS = (
    pa.field("to_date_day", pa.date32(), nullable=True),
    pa.field("quality", pa.list_(pa.string()), nullable=False),
    pa.field("extras", pa.string(), nullable=True),  # the unknown fields, as JSON
    pa.field("contract_version", pa.int16(), nullable=False),
)
# What a row stored before a column existed holds in PostgreSQL (migration 0005's defaults; a
# field added to the contract later is null).
OLD_ROW_VALUES: dict[str, Any] = {"quality": [], "contract_version": 1}

META_FIELDS = (
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
    pa.field("version", pa.int64(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("stored_at", pa.timestamp("us", tz="UTC"), nullable=False),
)

_FLOATS = {f.name for f in RIDE_FIELDS if f.kind in (Kind.LATITUDE, Kind.LONGITUDE)}


# Encodings measured on XRides-like rides (benchmarks/archiver_bench.py): delta-packing the
# high-cardinality integers and timestamps, dictionaries for the small enumerations and plain
# doubles for coordinates make files a third smaller than Parquet's defaults, under zstd.
DELTA_COLUMNS = (
    "booking_id",
    "user_id",
    "driver_id",
    "from_date",
    "to_date",
    "booking_created",
    "kafka_offset",
    "version",
    "received_at",
    "stored_at",
)
PLAIN_COLUMNS = tuple(f.name for f in RIDE_FIELDS if f.name in _FLOATS)


def archive_schema(fields: Fields = RIDE_FIELDS) -> pa.Schema:
    return pa.schema([*parquet_schema(fields), *STORED_FIELDS, *META_FIELDS])


COLUMNS: tuple[str, ...] = tuple(archive_schema().names)


def readable(older: pa.Schema, schema: pa.Schema | None = None) -> list[str]:
    """Why a file of schema ``older`` cannot be read as ``schema`` (empty: it can). A file may lack
    columns added since it was written; a column it has must keep its name and type."""
    schema = schema or archive_schema()
    problems = [f"unknown column {f.name}" for f in older if schema.get_field_index(f.name) < 0]
    for f in older:
        index = schema.get_field_index(f.name)
        if index >= 0 and not schema.field(index).type.equals(f.type):
            problems.append(
                f"column {f.name} is {f.type}, the archive schema says {schema.field(index).type}"
            )
    return problems


def align(table: pa.Table, schema: pa.Schema | None = None) -> pa.Table:
    """A table of an older file as one of ``schema``: each missing column filled with what
    PostgreSQL holds for rows stored before it existed (:data:`OLD_ROW_VALUES`, else null)."""
    schema = schema or archive_schema()
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name))
        else:
            value = OLD_ROW_VALUES.get(field.name)
            columns.append(pa.array([value] * table.num_rows, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The half-open UTC interval of a pickup day (days are UTC days, like the daily indices)."""
    start = datetime.combine(day, time(0), tzinfo=_UTC)
    return start, start + timedelta(days=1)


def day_query(table: str = "cab_rides") -> str:
    """The source query of a day, recorded in its manifest (the same text ``verify`` runs)."""
    return (
        f"SELECT {', '.join(COLUMNS)} FROM {table}"  # noqa: S608 - identifiers from the schema
        " WHERE from_date >= $1 AND from_date < $2 ORDER BY booking_id"
    )


def rows_to_table(rows: Sequence[Any]) -> pa.Table:
    """asyncpg records (in :data:`COLUMNS` order) as an Arrow table of :func:`archive_schema`."""
    schema = archive_schema()
    columns: list[pa.Array] = []
    for index, field in enumerate(schema):
        values = [row[index] for row in rows]
        if field.name in _FLOATS:
            values = [None if v is None else float(v) for v in values]
        columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def canonical(table: pa.Table) -> pa.Table:
    """A table in the archive's canonical form: archive schema, sorted by booking id, one chunk
    (a table of an older file is aligned first)."""
    return align(table).select(list(COLUMNS)).cast(archive_schema()).sort_by("booking_id").combine_chunks()
