"""The enrichment: the derived fields of a ride, defined once for every engine that computes them.

The stream job stores them in Elasticsearch (which here has no scripts or pipelines), the
archiver's restore rebuilds documents with :func:`enrich`, and the query DSL computes the same
fields in PostgreSQL and DuckDB from :data:`DERIVED_FIELDS`, whose SQL forms sit next to the Python
formula they must equal (tests compare them over generated rides). Odd rides are flagged, never
dropped: a drop-off before the pickup is a fact worth seeing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from xrides.ride.fields import RIDE_FIELDS
from xrides.ride.model import Ride
from xrides.ride.quality import QUALITY_FLAGS

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


@dataclass(frozen=True, slots=True)
class ServiceRegion:
    """A bounding box; the default is Bangalore's urban area with a margin (about 50 x 55 km)."""

    min_lat: float = 12.70
    max_lat: float = 13.25
    min_lon: float = 77.35
    max_lon: float = 77.85

    def contains(self, lat: float, lon: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance: 2R asin(sqrt(sin²(dφ/2) + cos φ1 cos φ2 sin²(dλ/2)))."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def minutes_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 60


def booking_channel(online: int, mobile_site: int) -> str:
    """online when booked on the website, mobile_site on the mobile site, offline otherwise."""
    if online:
        return "online"
    if mobile_site:
        return "mobile_site"
    return "offline"


def enrich(ride: Ride, zone: ZoneInfo, region: ServiceRegion) -> dict[str, Any]:
    """The Elasticsearch document of a ride: raw fields plus derived ones, its data-quality flags
    (every flag of xrides/ride/quality.py, true or false, and outside_service_region), a bare
    date's day beside its null timestamp, and the unknown fields it came with."""
    doc = ride.to_wire()
    for spec in RIDE_FIELDS:
        if spec.date_only:
            day = ride.day_of(spec.name)
            doc[spec.name] = None if day is not None else doc[spec.name]
            doc[f"{spec.name}_day"] = None if day is None else day.isoformat()
    if ride.extras:
        doc["extras"] = ride.extras
    pickup_local = ride.from_date.astimezone(zone)
    has_pickup = ride.from_lat is not None and ride.from_long is not None
    has_dropoff = ride.to_lat is not None and ride.to_long is not None
    distance = None
    if has_pickup and has_dropoff:
        distance = haversine_km(ride.from_lat, ride.from_long, ride.to_lat, ride.to_long)  # type: ignore[arg-type]
    outside = (has_pickup and not region.contains(ride.from_lat, ride.from_long)) or (  # type: ignore[arg-type]
        has_dropoff and not region.contains(ride.to_lat, ride.to_long)  # type: ignore[arg-type]
    )
    doc.update(
        {
            "distance_km": None if distance is None else round(distance, 3),
            "lead_time_min": round(minutes_between(ride.booking_created, ride.from_date), 2),
            "trip_duration_min": None
            if ride.to_date is None
            else round(minutes_between(ride.from_date, ride.to_date), 2),
            "hour_of_day": pickup_local.hour,
            "day_of_week": pickup_local.isoweekday(),  # 1 = Monday .. 7 = Sunday
            "is_weekend": pickup_local.isoweekday() >= 6,
            "booking_channel": booking_channel(ride.online_booking, ride.mobile_site_booking),
            "pickup": {"lat": ride.from_lat, "lon": ride.from_long} if has_pickup else None,
            "dropoff": {"lat": ride.to_lat, "lon": ride.to_long} if has_dropoff else None,
            "is_cancelled": ride.car_cancellation == 1,
            "quality": {
                **{flag.name: flag.holds(ride) for flag in QUALITY_FLAGS},
                "outside_service_region": bool(outside),
            },
        }
    )
    return doc


def daily_index(prefix: str, ride: Ride) -> str:
    """``rides-YYYY.MM.DD`` by the pickup's UTC day (indices, like the archive, are UTC days)."""
    return f"{prefix}{ride.from_date.strftime('%Y.%m.%d')}"


# -- the same formulas in SQL -----------------------------------------------------------------

Dialect = Literal["pg", "duckdb"]


@dataclass(frozen=True, slots=True)
class DerivedField:
    """A derived field as the query engines see it: its type and its SQL over one ride row."""

    name: str
    value_type: Literal["integer", "number", "string", "boolean"]
    nullable: bool
    description: str
    sql: Callable[[Dialect, str], str]  # (dialect, service zone) -> expression over raw columns
    dimension: bool  # grouped by (else measured: sum, avg, percentiles)
    choices: tuple[str, ...] = ()

    @property
    def es_type(self) -> str:
        """Its Elasticsearch type (hours and weekdays fit a byte)."""
        if self.value_type == "integer":
            return "byte"
        return {"number": "double", "string": "keyword", "boolean": "boolean"}[self.value_type]


def _local(unit: str, column: str, dialect: Dialect, zone: str) -> str:
    if dialect == "pg":
        return f"extract({unit} FROM {column} AT TIME ZONE '{zone}')::int"
    return f"{unit}(timezone('{zone}', {column}))"


def _minutes(later: str, earlier: str, dialect: Dialect) -> str:
    # Rounded as :func:`enrich` rounds them, so every engine groups and sums the same numbers.
    if dialect == "pg":
        return f"round((extract(epoch FROM {later} - {earlier}) / 60)::numeric, 2)::float8"
    return f"round((epoch({later}) - epoch({earlier})) / 60, 2)"


def _haversine(dialect: Dialect, _zone: str) -> str:
    cast = "::float8" if dialect == "pg" else ""
    la1, lo1, la2, lo2 = (f"{c}{cast}" for c in ("from_lat", "from_long", "to_lat", "to_long"))
    a = (
        f"power(sin((radians({la2}) - radians({la1})) / 2), 2) + cos(radians({la1})) * cos(radians({la2}))"
        f" * power(sin(radians({lo2} - {lo1}) / 2), 2)"
    )
    inner = f"2 * {EARTH_RADIUS_KM} * asin(least(1.0, sqrt({a})))"
    rounded = f"round(({inner})::numeric, 3)::float8" if dialect == "pg" else f"round({inner}, 3)"
    # least() skips nulls, so a ride without a drop-off would get asin(1): null it explicitly
    missing = " OR ".join(f"{c} IS NULL" for c in ("from_lat", "from_long", "to_lat", "to_long"))
    return f"CASE WHEN {missing} THEN NULL ELSE {rounded} END"


def _channel(_dialect: Dialect, _zone: str) -> str:
    return (
        "CASE WHEN online_booking = 1 THEN 'online' WHEN mobile_site_booking = 1 THEN 'mobile_site'"
        " ELSE 'offline' END"
    )


_WEEKDAY = "Pickup weekday 1 = Monday .. 7 = Sunday in the service zone"

DERIVED_FIELDS: tuple[DerivedField, ...] = (
    DerivedField("booking_channel", "string", False, "online | mobile_site | offline", _channel,
                 dimension=True, choices=("online", "mobile_site", "offline")),
    DerivedField("hour_of_day", "integer", False, "Pickup hour 0..23 in the service zone",
                 lambda d, z: _local("hour", "from_date", d, z), dimension=True),
    DerivedField("day_of_week", "integer", False, _WEEKDAY,
                 lambda d, z: _local("isodow", "from_date", d, z), dimension=True),
    DerivedField("is_weekend", "boolean", False, "Pickup on a Saturday or Sunday in the service zone",
                 lambda d, z: f"({_local('isodow', 'from_date', d, z)} >= 6)", dimension=True),
    DerivedField("is_cancelled", "boolean", False, "car_cancellation = 1",
                 lambda _d, _z: "(car_cancellation = 1)", dimension=True),
    DerivedField("distance_km", "number", True, "Great-circle pickup to drop-off distance, km (3 decimals)",
                 _haversine, dimension=False),
    DerivedField("lead_time_min", "number", False, "Minutes from booking to pickup (2 decimals)",
                 lambda d, _z: _minutes("from_date", "booking_created", d), dimension=False),
    DerivedField("trip_duration_min", "number", True, "Minutes from pickup to drop-off (2 decimals)",
                 lambda d, _z: _minutes("to_date", "from_date", d), dimension=False),
)  # fmt: skip
