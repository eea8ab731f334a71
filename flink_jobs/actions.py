"""What the job tells the indexer: one JSON action per line of the ``rides.es`` topic.

The decisions (which index, which version, skip or delete) are made in the job, which owns the
per-booking state; the indexer only applies them. Kept free of PyFlink so it is unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from xrides.ride import RideEnvelope, RideValidationError, decode_envelope, format_timestamp
from xrides.ride.enrich import ServiceRegion, daily_index, enrich
from xrides.window import oldest_hot


@dataclass(frozen=True, slots=True)
class Window:
    """The hot window: pickups in [reference - hot_days, +inf) are indexed."""

    hot_days: int
    reference_time: datetime | None = None

    def oldest(self) -> datetime:
        return oldest_hot(self.reference_time or datetime.now(UTC), self.hot_days)


@dataclass(slots=True)
class BookingState:
    """The job's keyed state for one booking: where its current version is indexed."""

    index: str | None = None
    version: int = 0


def plan(
    raw: bytes, state: BookingState, window: Window, zone: ZoneInfo, region: ServiceRegion, prefix: str
) -> list[dict[str, Any]]:
    """The actions for one message on ``rides``, updating ``state`` in place."""
    return plan_ride(raw, state, window, zone, region, prefix)[0]


def plan_ride(
    raw: bytes, state: BookingState, window: Window, zone: ZoneInfo, region: ServiceRegion, prefix: str
) -> tuple[list[dict[str, Any]], RideEnvelope | None]:
    """:func:`plan`, plus the envelope when this version is accepted (it feeds the demand windows)."""
    try:
        envelope = decode_envelope(raw)
    except RideValidationError as exc:
        reason = f"invalid ride: {exc.message}"[:1000]
        return [{"op": "dead", "reason": reason, "raw": raw.decode("latin-1")}], None
    except (ValueError, TypeError) as exc:
        reason = f"undecodable message: {exc}"[:1000]
        return [{"op": "dead", "reason": reason, "raw": raw.decode("latin-1")}], None
    if envelope.version < state.version:
        return [], None  # an old replay: the stored version is newer (Elasticsearch would refuse it too)
    return _plan_envelope(envelope, state, window, zone, region, prefix), envelope


def _plan_envelope(
    envelope: RideEnvelope,
    state: BookingState,
    window: Window,
    zone: ZoneInfo,
    region: ServiceRegion,
    prefix: str,
) -> list[dict[str, Any]]:
    ride = envelope.ride
    actions: list[dict[str, Any]] = []
    index = daily_index(prefix, ride)
    if state.index is not None and state.index != index:
        # The pickup moved to another day: remove the copy in the old daily index.
        actions.append(
            {"op": "delete", "index": state.index, "id": str(ride.booking_id), "version": envelope.version}
        )
    state.version = envelope.version
    if ride.from_date < window.oldest():
        state.index = None
        actions.append({"op": "skip", "reason": "older than the hot window", "id": str(ride.booking_id)})
        return actions
    state.index = index
    doc = enrich(ride, zone, region)
    doc["version"] = envelope.version
    doc["received_at"] = format_timestamp(envelope.received_at)
    doc["contract_version"] = envelope.contract
    actions.append(
        {"op": "index", "index": index, "id": str(ride.booking_id), "version": envelope.version, "doc": doc}
    )
    return actions


def encode(action: dict[str, Any]) -> str:
    return orjson.dumps(action).decode()


def keyed(action: dict[str, Any]) -> tuple[str | None, str]:
    """The action as a ``rides.es`` record: keyed by the document id (the booking id, a demand
    window's id), so every action for one document lands on one partition, in order: a ride
    moved to another day has its delete and its new index applied in the order they were made.
    Dead letters and log lines have no key."""
    key = action.get("id")
    return (str(key) if key is not None else None), encode(action)
