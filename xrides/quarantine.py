"""Refused rides: kept, trackable, and replayable after a contract fix.

A ride the API refuses (422) is not forgotten: the API writes the original body and every error to
the ``rides.refused`` topic before it answers, and the answer's ``request_id`` (``q<p>-<o>``) is
that position, so ``GET /v1/requests/{id}`` says ``refused`` with the errors. The persister keeps
each one in the ``quarantine`` table, the indexer in ``failed-rides-*`` for Kibana.

After a contract change (a field relaxed, a new format accepted) :func:`replay` re-validates the
quarantined bodies under the current contract and sends the ones that now pass through the normal
path, as if they had been accepted when they were refused: their version is the refusal time, so a
newer version the client sent since wins over the replayed one. Each row is replayed once (it
records the request id it got); a crash between the send and that record sends it again, which
stores the same ride once (same booking, same version).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson

from xrides.request_ids import Position, ride_request_id
from xrides.ride import RideEnvelope, RideValidationError, parse_ride
from xrides.ride.fields import CONTRACT_VERSION

log = logging.getLogger("xrides.quarantine")

REFUSAL_SCHEMA = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused ride as it travels on ``rides.refused``."""

    refused_at: int  # microseconds since the epoch
    body: bytes  # the ride exactly as the client sent it (JSON)
    errors: list[dict[str, Any]]
    booking_id: int | None = None
    key_id: str | None = None
    contract: int = CONTRACT_VERSION

    def key(self) -> bytes | None:
        return None if self.booking_id is None else str(self.booking_id).encode()

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "schema": REFUSAL_SCHEMA,
                "refused_at": self.refused_at,
                "contract": self.contract,
                "key_id": self.key_id,
                "booking_id": self.booking_id,
                "errors": self.errors,
                "body": self.body.decode("utf-8", "replace"),
            }
        )

    @property
    def refused_at_time(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.refused_at)


def decode_refusal(raw: bytes) -> Refusal:
    """Raises ``ValueError`` when the message is not a refusal."""
    data: Any = orjson.loads(raw)
    if not isinstance(data, dict) or data.get("schema") != REFUSAL_SCHEMA:
        raise ValueError("not a refusal of schema 1")
    refused_at, body, errors = data.get("refused_at"), data.get("body"), data.get("errors")
    if not isinstance(refused_at, int) or not isinstance(body, str) or not isinstance(errors, list):
        raise TypeError("a refusal needs refused_at, body and errors")
    booking_id = data.get("booking_id")
    return Refusal(
        refused_at=refused_at,
        body=body.encode(),
        errors=errors,
        booking_id=booking_id if isinstance(booking_id, int) and not isinstance(booking_id, bool) else None,
        key_id=data.get("key_id") if isinstance(data.get("key_id"), str) else None,
        contract=int(data.get("contract", 1)),
    )


# -- replay ---------------------------------------------------------------------------------------

# (key, envelope bytes) -> the position each was written at (acks=all)
SendRides = Callable[[Sequence[tuple[bytes, bytes]]], Awaitable[list[Position]]]


@dataclass
class ReplayReport:
    dry_run: bool
    considered: int = 0
    replayed: int = 0
    still_refused: int = 0
    request_ids: dict[str, str] = field(default_factory=dict)  # quarantine request id -> new one

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "considered": self.considered,
            "replayed": self.replayed,
            "still_refused": self.still_refused,
            "request_ids": self.request_ids,
        }


_PENDING = """
SELECT kafka_partition, kafka_offset, refused_at, body FROM quarantine
WHERE replayed_at IS NULL AND refused_at >= $1 AND refused_at < $2
ORDER BY refused_at, kafka_partition, kafka_offset
LIMIT $3
FOR UPDATE SKIP LOCKED
"""


async def replay(
    conn: asyncpg.Connection,
    send: SendRides,
    since: datetime,
    until: datetime,
    zone: ZoneInfo,
    dry_run: bool = False,
    limit: int = 10_000,
) -> ReplayReport:
    """Re-validate quarantined rides refused in ``[since, until)``; send and mark those that pass.

    Rows are locked while they are sent (``SKIP LOCKED``: two replays never send the same row) and
    marked in the same transaction, after the broker acknowledged them.
    """
    report = ReplayReport(dry_run)
    async with conn.transaction():
        rows = await conn.fetch(_PENDING, since, until, limit)
        report.considered = len(rows)
        valid: list[tuple[asyncpg.Record, RideEnvelope]] = []
        for row in rows:
            try:
                ride = parse_ride(orjson.loads(row["body"]), zone)
            except (RideValidationError, orjson.JSONDecodeError) as exc:
                report.still_refused += 1
                if not dry_run:
                    await _still_refused(conn, row, exc)
                continue
            version = (row["refused_at"] - _EPOCH) // timedelta(microseconds=1)  # exact, no float
            valid.append((row, RideEnvelope(ride, version, source="quarantine")))
        if dry_run or not valid:
            report.replayed = len(valid)
            return report
        positions = await send([(e.key(), e.encode()) for _, e in valid])
        for (row, _), position in zip(valid, positions, strict=True):
            new_id = ride_request_id(position.partition, position.offset)
            await conn.execute(
                "UPDATE quarantine SET replayed_at = now(), replayed_as = $3, last_replay_at = now()"
                " WHERE kafka_partition = $1 AND kafka_offset = $2",
                row["kafka_partition"],
                row["kafka_offset"],
                new_id,
            )
            report.request_ids[f"q{row['kafka_partition']}-{row['kafka_offset']}"] = new_id
        report.replayed = len(valid)
    log.info(
        "quarantine replayed", extra={"replay": report.as_dict() | {"request_ids": len(report.request_ids)}}
    )
    return report


async def _still_refused(conn: asyncpg.Connection, row: asyncpg.Record, exc: Exception) -> None:
    errors = (
        [e.as_dict() for e in exc.errors]
        if isinstance(exc, RideValidationError)
        else [{"field": "$", "code": "malformed_body", "message": str(exc)[:300]}]
    )
    await conn.execute(
        "UPDATE quarantine SET last_replay_at = now(), replay_errors = $3"
        " WHERE kafka_partition = $1 AND kafka_offset = $2",
        row["kafka_partition"],
        row["kafka_offset"],
        orjson.dumps(errors).decode(),
    )
