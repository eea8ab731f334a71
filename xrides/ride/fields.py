"""The ride contract as data: one table of fields, the single source of truth, and its version.

The parser, the OpenAPI schema, the PostgreSQL columns (and the migration that adds a new one),
the Elasticsearch mapping, the Parquet schema and the query catalog are all derived from
:data:`RIDE_FIELDS`; tests check the live schemas against it, so the copies cannot drift.

The contract is versioned: :data:`CONTRACT_VERSION` moves with every change to the table, each
field says in which version it arrived (``since``), and every stored ride records the version it
was accepted under. A change must keep every earlier client and every stored ride valid
(xrides/ride/contract.py checks it against ``contract.lock.json``): adding an optional field is
one line here.

Versions:
    1  the prototype's fields, and car_cancellation
    2  from_area_id may be null when from_city_id is set (long-distance rides booked by city);
       to_date may be a bare date (the drop-off day, its time unknown)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """What a field holds on the wire and in storage."""

    ID = "id"  # non-negative 64-bit integer identifier
    INT = "int"  # small enumerated integer (travel type, vehicle model, ...): 32-bit
    FLAG = "flag"  # 0 or 1
    LATITUDE = "latitude"
    LONGITUDE = "longitude"
    TIMESTAMP = "timestamp"  # M/D/YYYY H:MM[:SS] local time, or ISO 8601


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: Kind
    nullable: bool
    description: str
    default: int | None = None
    # May the key be absent? Nullable fields may (absent means null); so may fields with a default.
    optional: bool = False
    # A timestamp that may come as a bare date (M/D/YYYY or YYYY-MM-DD): the day is kept in
    # <name>_day and the timestamp stays null, so nobody mistakes the day for its midnight.
    date_only: bool = False
    since: int = 1  # the contract version that added the field

    @property
    def required(self) -> bool:
        return not (self.nullable or self.optional)


RIDE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("booking_id", Kind.ID, False, "XRides' booking id; the ride's key (updates reuse it)"),
    FieldSpec("user_id", Kind.ID, False, "Customer id"),
    FieldSpec("vehicle_model_id", Kind.INT, False, "Vehicle model of the cab"),
    FieldSpec("package_id", Kind.INT, True, "Rental package, for hourly rentals"),
    FieldSpec("travel_type_id", Kind.INT, False, "1 long distance, 2 point to point, 3 hourly rental"),
    FieldSpec("from_area_id", Kind.ID, True, "Pickup area; may be null when from_city_id is set"),
    FieldSpec("to_area_id", Kind.ID, True, "Drop-off area (unknown for rentals)"),
    FieldSpec("from_city_id", Kind.ID, True, "Pickup city"),
    FieldSpec("to_city_id", Kind.ID, True, "Drop-off city (long distance)"),
    FieldSpec("from_date", Kind.TIMESTAMP, False, "Pickup time"),
    FieldSpec(
        "to_date",
        Kind.TIMESTAMP,
        True,
        "Drop-off time, once known; a bare date when only the day is known",
        date_only=True,
    ),
    FieldSpec("online_booking", Kind.FLAG, False, "1 when booked on the website"),
    FieldSpec("mobile_site_booking", Kind.FLAG, False, "1 when booked on the mobile site"),
    FieldSpec("booking_created", Kind.TIMESTAMP, False, "When the booking was made"),
    FieldSpec("from_lat", Kind.LATITUDE, True, "Pickup latitude (WGS84)"),
    FieldSpec("from_long", Kind.LONGITUDE, True, "Pickup longitude (WGS84)"),
    FieldSpec("to_lat", Kind.LATITUDE, True, "Drop-off latitude (WGS84)"),
    FieldSpec("to_long", Kind.LONGITUDE, True, "Drop-off longitude (WGS84)"),
    FieldSpec("driver_id", Kind.ID, False, "Assigned driver; 0 while none is assigned"),
    FieldSpec(
        "car_cancellation",
        Kind.FLAG,
        False,
        "1 when the ride was cancelled; absent means 0 (a later message may set it)",
        default=0,
        optional=True,
    ),
)

CONTRACT_VERSION = 2

FIELDS_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in RIDE_FIELDS}

# Fields of which at least one must be set: a ride needs a pickup area or, for a long-distance
# ride booked by city, a pickup city.
ONE_OF: tuple[tuple[str, str], ...] = (("from_area_id", "from_city_id"),)

# Unknown fields are kept with the ride (as extras), up to this many per ride, names this long.
MAX_EXTRAS = 64
MAX_EXTRA_NAME = 64

# Historical exports spell the cancellation column this way; accepted as the same field.
FIELD_ALIASES: dict[str, str] = {"Car_Cancellation": "car_cancellation"}

# Coordinates travel in pairs: a pickup latitude without its longitude is an error.
COORDINATE_PAIRS: tuple[tuple[str, str], ...] = (("from_lat", "from_long"), ("to_lat", "to_long"))

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
