"""The catalog: the only names a query may use, and what each means on every backend.

Raw fields are derived from :data:`xrides.ride.RIDE_FIELDS` (a test checks it); enriched fields
repeat the formulas of :mod:`flink_jobs.enrich`, which stores them in Elasticsearch because
Elasticsearch here has no scripts. Each expression below is a constant of this module: SQL
identifiers never come from a query.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from xrides.ride import RIDE_FIELDS, Kind

SERVICE_ZONE = "Asia/Kolkata"  # the zone of hour_of_day, day_of_week and is_weekend (as Flink computes them)


class ValueType(enum.Enum):
    INTEGER = "integer"
    NUMBER = "number"
    STRING = "string"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    type: ValueType
    nullable: bool
    description: str
    pg: str  # expression over one cab_rides row in PostgreSQL
    duckdb: str  # the same over one archived row in DuckDB
    es: str  # the stored Elasticsearch field
    raw: bool  # a column of the ride contract (else enriched)
    dimension: bool  # may be grouped by
    measurable: bool  # sum/avg/min/max/percentile apply
    choices: tuple[str, ...] = ()  # the allowed values of a string field


@dataclass(frozen=True, slots=True)
class PointDef:
    """A point for geohash buckets: its coordinate columns and its Elasticsearch geo_point."""

    name: str
    lat: str
    lon: str
    es: str
    description: str


@dataclass(frozen=True, slots=True)
class RatioDef:
    """``sum(flag) / count``: the share of rides whose 0/1 flag is set (exact on every backend)."""

    name: str
    flag: str
    description: str


@dataclass(frozen=True, slots=True)
class AggregateDef:
    name: str
    needs_field: bool
    approximate_on_es: bool
    tolerance: float  # relative error allowed when approximate
    description: str


_RAW_TYPES = {
    Kind.ID: ValueType.INTEGER,
    Kind.INT: ValueType.INTEGER,
    Kind.FLAG: ValueType.INTEGER,
    Kind.LATITUDE: ValueType.NUMBER,
    Kind.LONGITUDE: ValueType.NUMBER,
    Kind.TIMESTAMP: ValueType.TIMESTAMP,
}


def _raw_fields() -> list[FieldDef]:
    out = []
    for spec in RIDE_FIELDS:
        kind = spec.kind
        pg = f"{spec.name}::float8" if kind in (Kind.LATITUDE, Kind.LONGITUDE) else spec.name
        out.append(
            FieldDef(
                name=spec.name,
                type=_RAW_TYPES[kind],
                nullable=spec.nullable,
                description=spec.description,
                pg=pg,
                duckdb=spec.name,
                es=spec.name,
                raw=True,
                dimension=kind in (Kind.ID, Kind.INT, Kind.FLAG),
                measurable=kind in (Kind.FLAG, Kind.LATITUDE, Kind.LONGITUDE),
            )
        )
    return out


def _local(unit: str, column: str, dialect: str) -> str:
    if dialect == "pg":
        return f"extract({unit} FROM {column} AT TIME ZONE '{SERVICE_ZONE}')::int"
    return f"{unit}(timezone('{SERVICE_ZONE}', {column}))"


def _minutes(later: str, earlier: str, dialect: str) -> str:
    # Rounded as flink_jobs.enrich rounds them, so every backend groups and sums the same numbers.
    if dialect == "pg":
        return f"round((extract(epoch FROM {later} - {earlier}) / 60)::numeric, 2)::float8"
    return f"round((epoch({later}) - epoch({earlier})) / 60, 2)"


def _haversine(dialect: str) -> str:
    cast = "::float8" if dialect == "pg" else ""
    la1, lo1, la2, lo2 = (f"{c}{cast}" for c in ("from_lat", "from_long", "to_lat", "to_long"))
    a = (
        f"power(sin((radians({la2}) - radians({la1})) / 2), 2) + cos(radians({la1})) * cos(radians({la2}))"
        f" * power(sin(radians({lo2} - {lo1}) / 2), 2)"
    )
    inner = f"2 * 6371.0088 * asin(least(1.0, sqrt({a})))"
    rounded = f"round(({inner})::numeric, 3)::float8" if dialect == "pg" else f"round({inner}, 3)"
    # least() skips nulls, so a ride without a drop-off would get asin(1): null it explicitly
    missing = " OR ".join(f"{c} IS NULL" for c in ("from_lat", "from_long", "to_lat", "to_long"))
    return f"CASE WHEN {missing} THEN NULL ELSE {rounded} END"


def _channel() -> str:
    return (
        "CASE WHEN online_booking = 1 THEN 'online' WHEN mobile_site_booking = 1 THEN 'mobile_site'"
        " ELSE 'offline' END"
    )


def _derived(
    name: str,
    vtype: ValueType,
    nullable: bool,
    description: str,
    expr: Callable[[str], str],
    *,
    dimension: bool,
    choices: tuple[str, ...] = (),
) -> FieldDef:
    return FieldDef(
        name=name,
        type=vtype,
        nullable=nullable,
        description=description,
        pg=expr("pg"),
        duckdb=expr("duckdb"),
        es=name,
        raw=False,
        dimension=dimension,
        measurable=not dimension,
        choices=choices,
    )


def _enriched_fields() -> list[FieldDef]:
    i, n, b = ValueType.INTEGER, ValueType.NUMBER, ValueType.BOOLEAN
    z = SERVICE_ZONE
    return [
        _derived("booking_channel", ValueType.STRING, False, "online | mobile_site | offline",
                 lambda _d: _channel(), dimension=True, choices=("online", "mobile_site", "offline")),
        _derived("hour_of_day", i, False, f"Pickup hour 0..23 in {z}",
                 lambda d: _local("hour", "from_date", d), dimension=True),
        _derived("day_of_week", i, False, f"Pickup weekday 1 = Monday .. 7 = Sunday in {z}",
                 lambda d: _local("isodow", "from_date", d), dimension=True),
        _derived("is_weekend", b, False, f"Pickup on a Saturday or Sunday in {z}",
                 lambda d: f"{_local('isodow', 'from_date', d)} >= 6", dimension=True),
        _derived("is_cancelled", b, False, "car_cancellation = 1",
                 lambda _d: "car_cancellation = 1", dimension=True),
        _derived("distance_km", n, True, "Great-circle pickup to drop-off distance, km (3 decimals)",
                 _haversine, dimension=False),
        _derived("lead_time_min", n, False, "Minutes from booking to pickup (2 decimals)",
                 lambda d: _minutes("from_date", "booking_created", d), dimension=False),
        _derived("trip_duration_min", n, True, "Minutes from pickup to drop-off (2 decimals)",
                 lambda d: _minutes("to_date", "from_date", d), dimension=False),
    ]  # fmt: skip


FIELDS: dict[str, FieldDef] = {f.name: f for f in (*_raw_fields(), *_enriched_fields())}

POINTS: dict[str, PointDef] = {
    "pickup": PointDef("pickup", "from_lat", "from_long", "pickup", "Pickup point (from_lat, from_long)"),
    "dropoff": PointDef("dropoff", "to_lat", "to_long", "dropoff", "Drop-off point (to_lat, to_long)"),
}

RATIOS: dict[str, RatioDef] = {
    "cancellation_rate": RatioDef("cancellation_rate", "car_cancellation", "Share of rides cancelled"),
    "online_share": RatioDef("online_share", "online_booking", "Share of rides booked on the website"),
    "mobile_share": RatioDef(
        "mobile_share", "mobile_site_booking", "Share of rides booked on the mobile site"
    ),
}

AGGREGATES: dict[str, AggregateDef] = {
    a.name: a
    for a in (
        AggregateDef("count", False, False, 0.0, "Number of rides"),
        AggregateDef("count_distinct", True, True, 0.01, "Distinct values (HyperLogLog++ on Elasticsearch)"),
        AggregateDef("sum", True, False, 0.0, "Sum of a measurable field (0 when every value is null)"),
        AggregateDef("avg", True, False, 0.0, "Mean of the non-null values"),
        AggregateDef("min", True, False, 0.0, "Smallest non-null value"),
        AggregateDef("max", True, False, 0.0, "Largest non-null value"),
        AggregateDef("percentile", True, True, 0.05, "Interpolated percentile (TDigest on Elasticsearch)"),
    )
}

# Time buckets and the time range apply to these (the range always to from_date: the partition key
# of PostgreSQL, the day of an Elasticsearch index and of an archive file).
TIME_FIELDS = tuple(name for name, f in FIELDS.items() if f.type is ValueType.TIMESTAMP)
RANGE_FIELD = "from_date"
MAX_GEOHASH_PRECISION = 8
