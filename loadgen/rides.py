"""Rides that look like XRides' traffic in Bangalore.

Areas have fixed centres inside the city's bounding box; travel types, vehicle models and
booking channels follow the mix of XRides' 2013 export (point-to-point dominates, ~7% cancelled);
booking-to-pickup lead times are log-normal (median ~40 minutes, a tail of advance bookings).
Dates are sent in XRides' own ``M/D/YYYY H:MM`` local-time form.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

KOLKATA = ZoneInfo("Asia/Kolkata")
LAT_RANGE = (12.85, 13.10)
LONG_RANGE = (77.45, 77.75)
VEHICLE_MODELS = (12, 28, 24, 85, 89, 65, 87, 90, 23, 86, 10, 64, 54, 17, 91, 13, 30, 36, 1, 39)
TRAVEL_TYPES = (1, 2, 3)
TRAVEL_WEIGHTS = (0.05, 0.75, 0.20)
AREAS = 600


def legacy_date(moment: datetime) -> str:
    local = moment.astimezone(KOLKATA)
    return f"{local.month}/{local.day}/{local.year} {local.hour}:{local.minute:02d}:{local.second:02d}"


class RideGenerator:
    def __init__(self, seed: int = 7, first_booking_id: int = 1, cancel_share: float = 0.07) -> None:
        self.rng = random.Random(seed)
        self.next_id = first_booking_id
        self.cancel_share = cancel_share
        area_rng = random.Random(1)  # area centres are the same for every generator
        self.areas = [(area_rng.uniform(*LAT_RANGE), area_rng.uniform(*LONG_RANGE)) for _ in range(AREAS + 1)]

    def _point(self, area: int) -> tuple[float, float]:
        lat, lon = self.areas[area]
        return round(lat + self.rng.gauss(0, 0.004), 5), round(lon + self.rng.gauss(0, 0.004), 5)

    def ride(self, created: datetime | None = None) -> dict[str, Any]:
        """One new ride booked at ``created`` (default: now)."""
        rng = self.rng
        created = created or datetime.now(KOLKATA)
        booking_id, self.next_id = self.next_id, self.next_id + 1
        travel_type = rng.choices(TRAVEL_TYPES, TRAVEL_WEIGHTS)[0]
        from_area = rng.randint(1, AREAS)
        pickup = created + timedelta(minutes=min(rng.lognormvariate(3.7, 1.0), 60 * 24 * 14))
        from_lat, from_long = self._point(from_area)
        to_area: int | None = None
        to_lat: float | None = None
        to_long: float | None = None
        if travel_type != 3:
            to_area = rng.randint(1, AREAS)
            to_lat, to_long = self._point(to_area)
        channel = rng.random()
        return {
            "booking_id": booking_id,
            "user_id": rng.randint(1, 50_000),
            "vehicle_model_id": rng.choice(VEHICLE_MODELS),
            "package_id": rng.randint(1, 7) if travel_type == 3 else None,
            "travel_type_id": travel_type,
            "from_area_id": from_area,
            "to_area_id": to_area,
            "from_city_id": 15 if travel_type == 1 else None,
            "to_city_id": rng.randint(1, 150) if travel_type == 1 else None,
            "from_date": legacy_date(pickup),
            "to_date": None,
            "online_booking": int(channel < 0.35),
            "mobile_site_booking": int(0.35 <= channel < 0.45),
            "booking_created": legacy_date(created),
            "from_lat": from_lat,
            "from_long": from_long,
            "to_lat": to_lat,
            "to_long": to_long,
            "driver_id": rng.randint(0, 5000),
            "car_cancellation": int(rng.random() < self.cancel_share),
        }


# Relative booking volume per local hour: a night trough, a morning peak (8-10) and a larger
# evening peak (17-20), the shape of XRides' 2013 export. Mean 1.0, so a schedule built from it
# keeps the day's mean rate.
DAILY_CURVE = (
    0.25, 0.15, 0.10, 0.08, 0.10, 0.25, 0.60, 1.20, 1.80, 1.70, 1.30, 1.10,
    1.05, 1.00, 1.00, 1.10, 1.40, 1.90, 2.00, 1.80, 1.40, 1.05, 0.70, 0.42,
)  # fmt: skip


def daily_schedule(day_seconds: float, mean_rate: float) -> list[tuple[float, float]]:
    """A day compressed into ``day_seconds``: 24 (seconds, rate) segments following the curve."""
    scale = mean_rate * 24 / sum(DAILY_CURVE)
    return [(day_seconds / 24, weight * scale) for weight in DAILY_CURVE]


@dataclass(frozen=True)
class TrafficMix:
    """What a stream of requests holds besides new rides.

    ``updates``: a later message for an earlier booking (a cancellation), which must win downstream.
    ``retries``: an earlier request sent again unchanged (a client that timed out and retried),
    which must create nothing twice. ``invalid``: a ride that breaks the contract, which must get
    its 422 and nothing else.
    """

    updates: float = 0.05
    retries: float = 0.02
    invalid: float = 0.0


@dataclass(frozen=True)
class Request:
    ride: dict[str, Any]
    valid: bool
    kind: str  # "new" | "update" | "retry" | "invalid"


_BREAKAGES: tuple[tuple[str, Any], ...] = (
    ("from_lat", "north of the lake"),
    ("booking_id", None),
    ("from_date", "the 31st of February"),
    ("from_lat", 200.0),
    ("user_id", -3),
)


def traffic(generator: RideGenerator, count: int, mix: TrafficMix) -> list[Request]:
    """``count`` requests in the proportions of ``mix`` (updates and retries reuse earlier rides)."""
    rng = generator.rng
    sent: list[dict[str, Any]] = []
    out: list[Request] = []
    for _ in range(count):
        draw = rng.random()
        if sent and draw < mix.updates:
            earlier = dict(rng.choice(sent))
            earlier["car_cancellation"] = 1
            out.append(Request(earlier, True, "update"))
        elif sent and draw < mix.updates + mix.retries:
            out.append(Request(rng.choice(sent), True, "retry"))
        elif draw < mix.updates + mix.retries + mix.invalid:
            broken = generator.ride()
            field_name, value = rng.choice(_BREAKAGES)
            broken[field_name] = value
            out.append(Request(broken, False, "invalid"))
        else:
            ride = generator.ride()
            sent.append(ride)
            out.append(Request(ride, True, "new"))
    return out
