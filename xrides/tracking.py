"""Read-only tracking queries over the persister's tables, used by the API.

The persister writes one receipt per consumed message (``ride_receipts``) in the same transaction
as the ride itself, so "is this position stored, and when" is one indexed lookup. No receipt means
the persister has not reached the message yet (``pending``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from xrides.request_ids import Position, ride_request_id
from xrides.ride import RIDE_FIELDS, format_timestamp

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
SELECT {_RIDE_COLUMNS}, kafka_partition, kafka_offset, version, received_at, stored_at
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
        "request_id": ride_request_id(row["kafka_partition"], row["kafka_offset"]),
        "version": row["version"],
        "received_at": format_timestamp(row["received_at"]),
        "stored_at": format_timestamp(row["stored_at"]),
    }
