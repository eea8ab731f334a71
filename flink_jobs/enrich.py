"""Derived fields of a ride, computed in the job (Elasticsearch here has no scripts or pipelines).

Every function is pure and documented with its formula; ``enrich`` assembles the document.
Odd rides are flagged, never dropped: a drop-off before the pickup is a fact worth seeing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from xrides.ride import Ride

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
    """The Elasticsearch document of a ride: raw fields plus derived ones."""
    doc = ride.to_wire()
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
                "dropoff_before_pickup": ride.to_date is not None and ride.to_date < ride.from_date,
                "booked_after_pickup": ride.booking_created > ride.from_date,
                "outside_service_region": bool(outside),
                "missing_coordinates": not (has_pickup and has_dropoff),
            },
        }
    )
    return doc


def daily_index(prefix: str, ride: Ride) -> str:
    """``rides-YYYY.MM.DD`` by the pickup's UTC day (indices, like the archive, are UTC days)."""
    return f"{prefix}{ride.from_date.strftime('%Y.%m.%d')}"
