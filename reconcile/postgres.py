"""The PostgreSQL side: per-day counts, the persister's offsets and receipts, and the id lists.

Every query takes a UTC day range as ``[start, end)`` timestamps so the ``from_date`` indexes (and
partition pruning) serve it. Column and table names are constants of this module, never input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

_DAY = "(from_date AT TIME ZONE 'UTC')::date"


def bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """``[first 00:00 UTC, last + 1 day 00:00 UTC)``."""
    return datetime.combine(first, time.min, UTC), datetime.combine(last + timedelta(days=1), time.min, UTC)


@dataclass(frozen=True, slots=True)
class VersionCounts:
    versions: int  # bookings whose current version has this pickup day (ride_versions)
    with_receipt: int  # ...of which the version's message has its receipt


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    booking_id: int | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class Listed:
    """A difference: how many booking ids, and the first ``limit`` of them."""

    count: int
    ids: list[int]


async def stored_per_day(conn: asyncpg.Connection, first: date, last: date) -> dict[date, int]:
    rows = await conn.fetch(
        f"SELECT {_DAY} AS day, count(*) AS n FROM cab_rides"  # noqa: S608
        " WHERE from_date >= $1 AND from_date < $2 GROUP BY 1",
        *bounds(first, last),
    )
    return {r["day"]: r["n"] for r in rows}


async def versions_per_day(conn: asyncpg.Connection, first: date, last: date) -> dict[date, VersionCounts]:
    rows = await conn.fetch(
        "SELECT (v.from_date AT TIME ZONE 'UTC')::date AS day, count(*) AS n, count(r.kafka_offset) AS r"
        " FROM ride_versions v LEFT JOIN ride_receipts r"
        "   ON r.kafka_partition = v.kafka_partition AND r.kafka_offset = v.kafka_offset"
        " WHERE v.from_date >= $1 AND v.from_date < $2 GROUP BY 1",
        *bounds(first, last),
    )
    return {row["day"]: VersionCounts(row["n"], row["r"]) for row in rows}


async def _listed(conn: asyncpg.Connection, sql: str, day: date, limit: int) -> Listed:
    rows = await conn.fetch(sql, *bounds(day, day), limit)
    return Listed(rows[0]["total"] if rows else 0, [r["booking_id"] for r in rows])


async def lost_rows(conn: asyncpg.Connection, day: date, limit: int) -> Listed:
    """Current versions (ride_versions) whose row is not in cab_rides."""
    return await _listed(
        conn,
        "SELECT v.booking_id, count(*) OVER () AS total FROM ride_versions v"
        " WHERE v.from_date >= $1 AND v.from_date < $2 AND NOT EXISTS"
        " (SELECT 1 FROM cab_rides c WHERE c.booking_id = v.booking_id AND c.from_date = v.from_date)"
        " ORDER BY 1 LIMIT $3",
        day,
        limit,
    )


async def rows_without_version(conn: asyncpg.Connection, day: date, limit: int) -> Listed:
    """Rows of cab_rides no current version points at (written around the persister)."""
    return await _listed(
        conn,
        "SELECT c.booking_id, count(*) OVER () AS total FROM cab_rides c"
        " WHERE c.from_date >= $1 AND c.from_date < $2 AND NOT EXISTS"
        " (SELECT 1 FROM ride_versions v WHERE v.booking_id = c.booking_id AND v.from_date = c.from_date)"
        " ORDER BY 1 LIMIT $3",
        day,
        limit,
    )


async def versions_without_receipt(conn: asyncpg.Connection, day: date, limit: int) -> Listed:
    return await _listed(
        conn,
        "SELECT v.booking_id, count(*) OVER () AS total FROM ride_versions v"
        " WHERE v.from_date >= $1 AND v.from_date < $2 AND NOT EXISTS (SELECT 1 FROM ride_receipts r"
        "   WHERE r.kafka_partition = v.kafka_partition AND r.kafka_offset = v.kafka_offset)"
        " ORDER BY 1 LIMIT $3",
        day,
        limit,
    )


async def committed_offsets(conn: asyncpg.Connection, group_id: str, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
        group_id,
        topic,
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def receipts_between(conn: asyncpg.Connection, partition: int, start: int, stop: int) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM ride_receipts"
        " WHERE kafka_partition = $1 AND kafka_offset >= $2 AND kafka_offset < $3",
        partition,
        start,
        stop,
    )
    return count


async def offsets_without_receipt(
    conn: asyncpg.Connection, partition: int, start: int, stop: int, limit: int
) -> list[int]:
    rows = await conn.fetch(
        "SELECT o FROM generate_series($2::bigint, $3::bigint - 1) AS o WHERE NOT EXISTS"
        " (SELECT 1 FROM ride_receipts r WHERE r.kafka_partition = $1 AND r.kafka_offset = o)"
        " ORDER BY o LIMIT $4",
        partition,
        start,
        stop,
        limit,
    )
    return [r["o"] for r in rows]


async def dead_letters(conn: asyncpg.Connection, topic: str, limit: int) -> list[DeadLetter]:
    """Messages the persister dead-lettered and nobody replayed yet."""
    rows = await conn.fetch(
        "SELECT kafka_partition, kafka_offset, booking_id, payload FROM ingest_failures"
        " WHERE replayed_at IS NULL AND kafka_topic = $1 ORDER BY id LIMIT $2",
        topic,
        limit,
    )
    return [DeadLetter(r["kafka_partition"], r["kafka_offset"], r["booking_id"], r["payload"]) for r in rows]


async def current_versions(
    conn: asyncpg.Connection, booking_ids: Sequence[int]
) -> dict[int, tuple[int, date]]:
    """booking -> (current version, UTC pickup day) from ride_versions."""
    if not booking_ids:
        return {}
    rows = await conn.fetch(
        f"SELECT booking_id, version, {_DAY} AS day FROM ride_versions"  # noqa: S608
        " WHERE booking_id = ANY($1::bigint[])",
        list(booking_ids),
    )
    return {r["booking_id"]: (r["version"], r["day"]) for r in rows}


async def stored_ids(
    conn: asyncpg.Connection, day: date, before_version: int | None = None
) -> dict[int, int]:
    """booking -> version of the day's rows (only versions accepted before ``before_version``)."""
    start, end = bounds(day, day)
    rows = await conn.fetch(
        "SELECT booking_id, version FROM cab_rides WHERE from_date >= $1 AND from_date < $2 AND version < $3",
        start,
        end,
        before_version if before_version is not None else 2**62,
    )
    return {r["booking_id"]: r["version"] for r in rows}


async def stored_settled_count(conn: asyncpg.Connection, day: date, before_version: int) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM cab_rides WHERE from_date >= $1 AND from_date < $2 AND version < $3",
        *bounds(day, day),
        before_version,
    )
    return count


async def archived_days(conn: asyncpg.Connection, first: date, last: date) -> dict[date, int]:
    rows = await conn.fetch("SELECT day, rows FROM archive_days WHERE day >= $1 AND day <= $2", first, last)
    return {r["day"]: r["rows"] for r in rows}


async def dropped_months(conn: asyncpg.Connection) -> set[date]:
    return {r["month"] for r in await conn.fetch("SELECT month FROM archive_dropped_months")}


async def newest_stored_at(conn: asyncpg.Connection) -> datetime | None:
    """When the newest ride version became durable (receipts carry it, indexed)."""
    moment: datetime | None = await conn.fetchval(
        "SELECT stored_at FROM ride_receipts WHERE outcome = 'stored' ORDER BY stored_at DESC LIMIT 1"
    )
    return moment
