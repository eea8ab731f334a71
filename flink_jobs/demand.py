"""Demand windows: rides and cancellations per pickup area per 5 minutes, as index actions.

The job keys demand events by pickup area (``from_area_id``) and runs event-time tumbling windows
over them: the event time is ``booking_created`` (when the demand arose; pickups are planned hours
ahead, so they would make almost every event "late"), watermarks allow a bounded disorder, and a
window keeps accepting late events for the allowed lateness, firing again on each one. What is later
still is counted by the indexer as a ``skip`` (``late for its demand window``), never silently lost.

A window counts distinct bookings; a booking's latest version decides whether it is cancelled, so a
cancellation arriving within the lateness updates the window. The document id is area + window
start: every firing overwrites the same document. Its external version is the ride count, which
never shrinks for one window, so a replay or a restarted job that saw only part of a window cannot
overwrite a fuller count (Elasticsearch answers 409, counted as stale).

Pure Python, no PyFlink: the job wires these functions into its graph; unit tests call them directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from xrides.ride import RideEnvelope, format_timestamp

WINDOW_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class DemandEvent:
    """One accepted ride version as the window sees it (a tuple in the job: PyFlink Row types)."""

    area: str
    booking_id: str
    version: int
    cancelled: bool
    event_ms: int

    def as_tuple(self) -> tuple[str, str, int, int, int]:
        return (self.area, self.booking_id, self.version, int(self.cancelled), self.event_ms)

    @classmethod
    def from_tuple(cls, value: tuple[str, str, int, int, int] | Any) -> DemandEvent:
        return cls(str(value[0]), str(value[1]), int(value[2]), bool(value[3]), int(value[4]))


def demand_event(envelope: RideEnvelope) -> DemandEvent:
    """The demand event of a ride version: pickup area, and the booking time as event time."""
    ride = envelope.ride
    return DemandEvent(
        area=str(ride.from_area_id),
        booking_id=str(ride.booking_id),
        version=envelope.version,
        cancelled=ride.car_cancellation == 1,
        event_ms=int(ride.booking_created.timestamp() * 1000),
    )


def window_start(event_ms: int, size_ms: int = WINDOW_MS) -> int:
    """Start of the tumbling window holding ``event_ms`` (aligned to the epoch, as Flink does)."""
    return event_ms - event_ms % size_ms


def is_dropped(window_end_ms: int, lateness_ms: int, watermark_ms: int) -> bool:
    """Flink's rule: a window is gone once ``end - 1 + lateness <= watermark``."""
    return window_end_ms - 1 + lateness_ms <= watermark_ms


@dataclass(frozen=True, slots=True)
class DemandCounts:
    rides: int
    cancellations: int


def count(events: Iterable[DemandEvent]) -> DemandCounts:
    """Distinct bookings, and how many of them are cancelled in their latest version."""
    latest: dict[str, DemandEvent] = {}
    for event in events:
        seen = latest.get(event.booking_id)
        if seen is None or event.version >= seen.version:
            latest[event.booking_id] = event
    return DemandCounts(len(latest), sum(1 for e in latest.values() if e.cancelled))


def _iso(ms: int) -> str:
    return format_timestamp(datetime.fromtimestamp(ms / 1000, tz=UTC))


def demand_index(prefix: str, start_ms: int) -> str:
    """``ride-demand-YYYY.MM.DD`` by the window start's UTC day."""
    return f"{prefix}{datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime('%Y.%m.%d')}"


def demand_id(area: str, start_ms: int) -> str:
    """Area + window start: one document per window, overwritten by every firing."""
    return f"{area}-{_iso(start_ms)}"


def demand_action(
    area: str,
    start_ms: int,
    end_ms: int,
    events: Iterable[DemandEvent],
    prefix: str,
    oldest_ms: int,
    now_ms: int,
) -> dict[str, Any]:
    """The indexer action for one firing of one window (``skip`` when it is older than the hot window)."""
    if start_ms < oldest_ms:
        reason = "demand window older than the hot window"
        return {"op": "skip", "reason": reason, "id": demand_id(area, start_ms)}
    counts = count(events)
    doc = {
        "area_id": area,
        "window_start": _iso(start_ms),
        "window_end": _iso(end_ms),
        "rides": counts.rides,
        "cancellations": counts.cancellations,
        "updated_at": _iso(now_ms),
    }
    return {
        "op": "index",
        "index": demand_index(prefix, start_ms),
        "id": demand_id(area, start_ms),
        "version": counts.rides,
        "doc": doc,
    }


def late_action(event: DemandEvent) -> dict[str, Any]:
    """A demand event that came after its window was dropped: counted by the indexer as a skip."""
    return {
        "op": "skip",
        "reason": "late for its demand window",
        "id": f"{event.area}-{_iso(window_start(event.event_ms))}/{event.booking_id}",
    }
