"""Read-only tracking queries over the persister's tables, used by the API.

The persister writes one receipt per consumed message (``ride_receipts``) in the same transaction
as the ride itself, so "is this position stored, and when" is one indexed lookup. No receipt means
the persister has not reached the message yet (``pending``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import asyncpg
import orjson
from prometheus_client import Counter

from xrides.errors import Unavailable
from xrides.request_ids import Position, ride_request_id
from xrides.ride import RIDE_FIELDS, format_timestamp

log = logging.getLogger("xrides.tracking")

REPLICA_FALLBACKS = Counter(
    "xrides_tracking_replica_fallbacks", "Tracking reads the replica could not answer, asked of the primary"
)

State = Literal["stored", "superseded", "failed", "pending"]


@dataclass(frozen=True, slots=True)
class ItemState:
    state: State
    booking_id: int | None = None
    stored_at: datetime | None = None
    reason: str | None = None


_RECEIPTS = """
SELECT r.kafka_partition, r.kafka_offset, r.booking_id, r.outcome, r.stored_at, f.reason
FROM ride_receipts r
JOIN unnest($1::int[], $2::bigint[]) AS p(part, off)
  ON r.kafka_partition = p.part AND r.kafka_offset = p.off
LEFT JOIN ingest_failures f
  ON f.kafka_partition = r.kafka_partition AND f.kafka_offset = r.kafka_offset
"""


async def item_states(pool: asyncpg.Pool, positions: Sequence[Position]) -> dict[Position, ItemState]:
    """The state of each position on ``rides``; positions without a receipt are ``pending``."""
    states: dict[Position, ItemState] = {p: ItemState("pending") for p in positions}
    if not positions:
        return states
    rows = await pool.fetch(_RECEIPTS, [p.partition for p in positions], [p.offset for p in positions])
    for row in rows:
        position = Position(row["kafka_partition"], row["kafka_offset"])
        states[position] = ItemState(row["outcome"], row["booking_id"], row["stored_at"], row["reason"])
    return states


# Column names come from the contract's field table, never from input.
_RIDE_COLUMNS = ", ".join(f.name for f in RIDE_FIELDS)
_LATEST = f"""
SELECT {_RIDE_COLUMNS}, to_date_day, quality, extras, contract_version,
       kafka_partition, kafka_offset, version, received_at, stored_at
FROM cab_rides WHERE booking_id = $1
ORDER BY version DESC LIMIT 1
"""  # noqa: S608


def _wire(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if value is not None and not isinstance(value, int | str):
        return float(value)  # numeric coordinates come back as Decimal
    return value


async def latest_ride(pool: asyncpg.Pool, booking_id: int) -> dict[str, Any] | None:
    """The stored version of a booking in the ride's wire form, plus its ingestion metadata."""
    row = await pool.fetchrow(_LATEST, booking_id)
    if row is None:
        return None
    ride = {f.name: _wire(row[f.name]) for f in RIDE_FIELDS}
    return {
        **ride,
        "to_date_day": row["to_date_day"].isoformat() if row["to_date_day"] else None,
        "quality": list(row["quality"]),
        "extras": orjson.loads(row["extras"]) if row["extras"] else None,
        "contract_version": row["contract_version"],
        "request_id": ride_request_id(row["kafka_partition"], row["kafka_offset"]),
        "version": row["version"],
        "received_at": format_timestamp(row["received_at"]),
        "stored_at": format_timestamp(row["stored_at"]),
    }


class PgTracking:
    """The tracking reads over a connection pool that is opened in the background.

    Ingest does not need PostgreSQL, so a process starts without it and keeps trying (every read
    before then is ``Unavailable``); :meth:`connect_forever` is its background task. With a
    streaming replica (``replica_dsn``) the reads go there first, and to the primary when the
    replica does not answer: a receipt or a ride version seen a moment late is still true (it
    says "not stored yet"), and a replica lost costs no answer.
    """

    def __init__(self, dsn: str, max_size: int = 4, replica_dsn: str = "") -> None:
        self._dsn = dsn
        self._replica_dsn = replica_dsn
        self._max_size = max_size
        self.pool: asyncpg.Pool | None = None
        self.replica: asyncpg.Pool | None = None

    async def connect_forever(self) -> None:
        if self._replica_dsn:
            await asyncio.gather(self._connect_primary(), self._connect_replica())
        else:
            await self._connect_primary()

    async def _connect_primary(self) -> None:
        self.pool = await _open_pool_forever(self._dsn, self._max_size, "PostgreSQL")

    async def _connect_replica(self) -> None:
        self.replica = await _open_pool_forever(self._replica_dsn, self._max_size, "the PostgreSQL replica")

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise Unavailable("PostgreSQL is not reachable; tracking is unavailable for now", retry_after_s=5)
        return self.pool

    async def _read(self, read: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """From the replica when there is one and it answers, else from the primary."""
        if self.replica is not None:
            try:
                return await read(self.replica)
            except _STORE_ERRORS as exc:
                REPLICA_FALLBACKS.inc()
                log.debug("replica read failed; asking the primary", extra={"error.message": str(exc)})
        return await _store_call(read(self._pool()))

    async def item_states(self, positions: Sequence[Position]) -> dict[Position, ItemState]:
        return await self._read(lambda pool: item_states(pool, positions))

    async def latest_ride(self, booking_id: int) -> dict[str, Any] | None:
        return await self._read(lambda pool: latest_ride(pool, booking_id))

    async def refusals(self, positions: Sequence[Position]) -> dict[Position, RefusalState]:
        return await self._read(lambda pool: refusal_states(pool, positions))

    async def ping(self) -> None:
        await _store_call(self._pool().fetchval("SELECT 1"))

    async def close(self) -> None:
        for pool in (self.pool, self.replica):
            if pool is not None:
                await pool.close()


async def _open_pool_forever(dsn: str, max_size: int, what: str) -> asyncpg.Pool:
    delay = 0.5
    while True:
        try:
            return await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, command_timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("not reachable yet", extra={"db.system": what, "error.message": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


# PostgreSQL trouble while reading is the store's unavailability, not a bug: 503 + Retry-After.
_STORE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

T = TypeVar("T")


async def _store_call(call: Awaitable[T]) -> T:
    try:
        return await call
    except _STORE_ERRORS as exc:
        raise Unavailable(f"tracking store unavailable: {type(exc).__name__}", retry_after_s=5) from exc


@dataclass(frozen=True, slots=True)
class RefusalState:
    """A quarantined ride as the persister recorded it, and what a replay made of it."""

    booking_id: int | None
    errors: list[dict[str, Any]]
    refused_at: datetime
    replayed_as: str | None


_REFUSALS = """
SELECT q.kafka_partition, q.kafka_offset, q.booking_id, q.errors, q.refused_at, q.replayed_as
FROM quarantine q
JOIN unnest($1::int[], $2::bigint[]) AS p(part, off)
  ON q.kafka_partition = p.part AND q.kafka_offset = p.off
"""


async def refusal_states(pool: asyncpg.Pool, positions: Sequence[Position]) -> dict[Position, RefusalState]:
    """Quarantined rides by their position on the quarantine topic (absent: not recorded yet)."""
    if not positions:
        return {}
    rows = await pool.fetch(_REFUSALS, [p.partition for p in positions], [p.offset for p in positions])
    return {
        Position(r["kafka_partition"], r["kafka_offset"]): RefusalState(
            r["booking_id"], orjson.loads(r["errors"]), r["refused_at"], r["replayed_as"]
        )
        for r in rows
    }
