"""Data-quality flags: facts about a ride worth filtering on, never reasons to refuse it.

Real exports carry shapes that are normal but incomplete: a drop-off known only to the day, a
long-distance ride with a pickup city and no pickup area, no coordinates at all. The platform
accepts them and says so: every flag below is computed once from the ride, stored with it in
PostgreSQL (``quality text[]``), Elasticsearch (``quality.<flag>: true``, filterable in Kibana) and
Parquet (``quality`` list), and shown by ``GET /v1/rides/{booking_id}``.

A flag is part of the contract: adding one is a change to this table, which the index template,
the catalog and the docs derive from (the stored flags of older rides are not rewritten).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the model imports this module's names; the predicates only read a ride
    from xrides.ride.model import Ride


@dataclass(frozen=True, slots=True)
class QualityFlag:
    name: str
    description: str
    holds: Callable[[Ride], bool]


def _has_pickup_point(ride: Ride) -> bool:
    return ride.from_lat is not None and ride.from_long is not None


def _has_dropoff_point(ride: Ride) -> bool:
    return ride.to_lat is not None and ride.to_long is not None


QUALITY_FLAGS: tuple[QualityFlag, ...] = (
    QualityFlag(
        "to_date_date_only",
        "The drop-off is known to the day, not the time: to_date is null, to_date_day holds the day",
        lambda r: r.to_date is None and r.to_date_day is not None,
    ),
    QualityFlag(
        "no_pickup_area", "No pickup area; the pickup city is known", lambda r: r.from_area_id is None
    ),
    QualityFlag(
        "no_coordinates",
        "Neither the pickup nor the drop-off has coordinates",
        lambda r: not _has_pickup_point(r) and not _has_dropoff_point(r),
    ),
    QualityFlag(
        "missing_coordinates",
        "The pickup or the drop-off has no coordinates (no distance can be computed)",
        lambda r: not (_has_pickup_point(r) and _has_dropoff_point(r)),
    ),
    QualityFlag(
        "dropoff_before_pickup",
        "to_date is earlier than from_date",
        lambda r: r.to_date is not None and r.to_date < r.from_date,
    ),
    QualityFlag(
        "booked_after_pickup",
        "booking_created is later than from_date",
        lambda r: r.booking_created > r.from_date,
    ),
)

FLAG_NAMES: tuple[str, ...] = tuple(f.name for f in QUALITY_FLAGS)


def quality_flags(ride: Ride) -> tuple[str, ...]:
    """The names of the flags that hold for ``ride``, in table order."""
    return tuple(flag.name for flag in QUALITY_FLAGS if flag.holds(ride))
