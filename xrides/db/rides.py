"""The ride table's columns and the version guard, derived from the ride contract.

``cab_rides`` holds the contract's fields (xrides/ride/fields.py) plus the ingestion metadata
below. Every writer stages rows into a temporary ``stage_rides`` (``LIKE cab_rides``) and calls
one SQL function, ``apply_staged_rides()``, which is the version guard: a staged version wins only
if it is at least as new, by ``(version, kafka_offset)``, as what ``ride_versions`` records for its
booking; a winner whose pickup moved to another month is deleted from its old partition; and the
row is inserted, or updated only when strictly newer. So a replay of an old message, a restore from
the archive and a crash-replayed batch can never overwrite newer data, and running any of them
twice changes nothing. The persister and the archiver's ``restore`` both call it.

The columns and the function are rendered here from the field table, and ``migrate`` applies them
whenever the rendered text changes: a field added to the contract becomes a column, and the
function that copies every column follows, so neither is a hand-kept copy of the field list.
"""

from __future__ import annotations

import hashlib

from xrides.ride import RIDE_FIELDS
from xrides.ride.schemas import Fields, postgres_columns

RIDE_COLUMNS: tuple[str, ...] = tuple(f.name for f in RIDE_FIELDS)
# What the parser learned beside the fields: a bare date's day, the data-quality flags, the unknown
# fields kept as sent, and the contract version the ride was accepted under (migration 0005).
STORED_COLUMNS: tuple[str, ...] = ("to_date_day", "quality", "extras", "contract_version")
# Where the ride was in Kafka, its version (µs at acceptance), who sent it, when it was received.
META_COLUMNS: tuple[str, ...] = ("kafka_partition", "kafka_offset", "version", "source", "received_at")
# Every column of cab_rides; stored_at is when the row became durable.
ROW_COLUMNS: tuple[str, ...] = (*RIDE_COLUMNS, *STORED_COLUMNS, *META_COLUMNS, "stored_at")
KEY_COLUMNS = ("booking_id", "from_date")


def row_columns(fields: Fields = RIDE_FIELDS) -> tuple[str, ...]:
    return (*(f.name for f in fields), *STORED_COLUMNS, *META_COLUMNS, "stored_at")


def contract_columns_sql(fields: Fields = RIDE_FIELDS) -> str:
    """The field table as DDL on ``cab_rides``: a column for every field (a field added to the
    table is a nullable column added here), and no NOT NULL on a field that became nullable.
    Every statement is a no-op when the table already matches."""
    statements = []
    for name, (pg_type, nullable) in postgres_columns(fields).items():
        statements.append(f"ALTER TABLE cab_rides ADD COLUMN IF NOT EXISTS {name} {pg_type};")
        if nullable:
            statements.append(f"ALTER TABLE cab_rides ALTER COLUMN {name} DROP NOT NULL;")
    return "\n".join(statements) + "\n"


def apply_function_sql(fields: Fields = RIDE_FIELDS) -> str:
    """``CREATE OR REPLACE FUNCTION apply_staged_rides(report_inserts)``: (booking_id, inserted) of
    every staged row that was applied (inserted, or updated to a newer version). ``inserted`` is
    only worked out when asked (restore reports it; the persister does not pay the lookup) and is
    null otherwise: a partitioned table cannot return ``xmax`` to tell an insert from an update."""
    columns = row_columns(fields)
    cols = ", ".join(columns)
    staged = ", ".join(f"w.{c}" for c in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in KEY_COLUMNS)
    # every identifier comes from the contract's field table
    return f"""CREATE OR REPLACE FUNCTION apply_staged_rides(report_inserts boolean)
RETURNS TABLE (booking_id bigint, inserted boolean)
LANGUAGE plpgsql SET search_path = public, pg_temp AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH winners AS (
        SELECT s.*, CASE WHEN report_inserts THEN EXISTS (
            SELECT 1 FROM cab_rides c WHERE c.booking_id = s.booking_id AND c.from_date = s.from_date
        ) END AS existed
        FROM stage_rides s LEFT JOIN ride_versions v ON v.booking_id = s.booking_id
        WHERE v.booking_id IS NULL OR (s.version, s.kafka_offset) >= (v.version, v.kafka_offset)
    ), moved AS (
        DELETE FROM cab_rides c USING winners w JOIN ride_versions v ON v.booking_id = w.booking_id
        WHERE c.booking_id = w.booking_id AND c.from_date = v.from_date AND v.from_date <> w.from_date
          AND (w.version, w.kafka_offset) > (v.version, v.kafka_offset)
    ), versions AS (
        INSERT INTO ride_versions AS v (booking_id, version, from_date, kafka_partition, kafka_offset)
        SELECT w.booking_id, w.version, w.from_date, w.kafka_partition, w.kafka_offset FROM winners w
        ON CONFLICT (booking_id) DO UPDATE
            SET version = excluded.version, from_date = excluded.from_date,
                kafka_partition = excluded.kafka_partition, kafka_offset = excluded.kafka_offset
            WHERE (excluded.version, excluded.kafka_offset) > (v.version, v.kafka_offset)
    ), applied AS (
        INSERT INTO cab_rides AS c ({cols})
        SELECT {staged} FROM winners w
        ON CONFLICT (booking_id, from_date) DO UPDATE SET {updates}
            WHERE (c.version, c.kafka_offset) < (excluded.version, excluded.kafka_offset)
        RETURNING c.booking_id
    )
    SELECT a.booking_id, NOT w.existed FROM applied a JOIN winners w ON w.booking_id = a.booking_id;
END
$fn$;
REVOKE ALL ON FUNCTION apply_staged_rides(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION apply_staged_rides(boolean) TO xrides_writer, xrides_archiver;
"""  # noqa: S608


def contract_objects(fields: Fields = RIDE_FIELDS) -> dict[str, str]:
    """Name -> DDL of the schema objects rendered from the contract (``migrate`` keeps them current):
    the columns first, then the function that lists them."""
    return {
        "cab_rides_columns": contract_columns_sql(fields),
        "apply_staged_rides": apply_function_sql(fields),
    }


def fingerprint(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()[:16]
