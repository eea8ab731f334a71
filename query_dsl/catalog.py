"""The catalog: the only names a query may use, and what each means on every backend.

Raw fields are derived from :data:`xrides.ride.RIDE_FIELDS`; enriched fields from
:data:`xrides.ride.enrich.DERIVED_FIELDS`, whose SQL forms sit beside the Python formulas the stream
job stores in Elasticsearch (which here has no scripts); the two rounded minute fields take their
SQL from :mod:`query_dsl.rounding`, which rounds as Python does. Customer and driver fields are
window functions over the rides of the query's range. Every expression is built from those
constants: SQL identifiers never come from a query.

``hour_of_day``, ``day_of_week`` and ``is_weekend`` are computed in the service zone, which is the
Flink job's ``XRIDES_LOCAL_ZONE``: the SQL forms take it from the query settings' ``local_zone``
(the same variable), so every engine uses the zone the stored documents were enriched in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from query_dsl.rounding import minutes_sql
from xrides.ride import DEFAULT_ZONE, RIDE_FIELDS, Kind
from xrides.ride.enrich import DERIVED_FIELDS, Dialect

SERVICE_ZONE = DEFAULT_ZONE  # the default zone of hour_of_day, day_of_week and is_weekend


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
    # (dialect, service zone) -> the expression, for fields whose SQL depends on the zone
    zoned_sql: Callable[[Dialect, str], str] | None = None
    # A window over the range's rides (customer and driver fields): computed in a subquery by
    # ``window_sql``, then referred to by name; Elasticsearch answers them by scanning the rides.
    window_sql: str = ""
    domain: int = 0  # how many values it can take (0: unbounded): the cost estimate's input
    flag: bool = False  # a 0/1 flag: summed and averaged (shares), never a percentile

    def sql(self, dialect: Dialect, zone: str) -> str:
        if self.zoned_sql is not None:
            return self.zoned_sql(dialect, zone)
        return self.pg if dialect == "pg" else self.duckdb

    @property
    def numeric(self) -> bool:
        """A histogram applies (integers and numbers)."""
        return self.type in (ValueType.INTEGER, ValueType.NUMBER)


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
                domain=_DOMAINS.get(spec.name, 2 if kind is Kind.FLAG else 0),
                flag=kind is Kind.FLAG,
            )
        )
    return out


# Small value sets (the cost estimate multiplies them instead of asking Elasticsearch).
_DOMAINS = {
    "travel_type_id": 3,
    "booking_channel": 3,
    "hour_of_day": 24,
    "day_of_week": 7,
    "is_weekend": 2,
    "is_cancelled": 2,
    "customer_type": 2,
}

# Rounded as Python rounds (query_dsl/rounding.py) instead of SQL's half away from zero.
_ROUNDED: dict[str, Callable[[Dialect, str], str]] = {
    "lead_time_min": lambda d, _z: minutes_sql("from_date", "booking_created", d),
    "trip_duration_min": lambda d, _z: minutes_sql("to_date", "from_date", d),
}


_VALUE_TYPES = {
    "integer": ValueType.INTEGER,
    "number": ValueType.NUMBER,
    "string": ValueType.STRING,
    "boolean": ValueType.BOOLEAN,
}


def _enriched_fields() -> list[FieldDef]:
    """The enrichment's fields, with the SQL forms defined beside its Python formulas."""
    out = []
    for d in DERIVED_FIELDS:
        sql = _ROUNDED.get(d.name, d.sql)
        out.append(
            FieldDef(
                name=d.name,
                type=_VALUE_TYPES[d.value_type],
                nullable=d.nullable,
                description=d.description.replace("the service zone", "the service zone (local_zone)"),
                pg=sql("pg", SERVICE_ZONE),
                duckdb=sql("duckdb", SERVICE_ZONE),
                es=d.name,
                raw=False,
                dimension=d.dimension,
                measurable=not d.dimension,
                choices=d.choices,
                zoned_sql=sql,
                domain=_DOMAINS.get(d.name, 0),
            )
        )
    return out


# Rides are ordered by pickup, then booking id, within the range (so "first" is the same everywhere).
_BY_USER = "PARTITION BY user_id ORDER BY from_date, booking_id"
_BY_DRIVER = "PARTITION BY driver_id ORDER BY from_date, booking_id"
_WINDOWS = (
    ("customer_type", ValueType.STRING, False,
     "new: the customer's first ride within the query's range; returning: a later one",
     f"CASE WHEN row_number() OVER ({_BY_USER}) = 1 THEN 'new' ELSE 'returning' END", ("new", "returning")),
    ("user_ride_number", ValueType.INTEGER, False,
     "1 for the customer's first ride within the query's range, 2 for the second, ...",
     f"row_number() OVER ({_BY_USER})", ()),
    ("user_rides", ValueType.INTEGER, False, "The customer's rides within the query's range",
     "count(*) OVER (PARTITION BY user_id)", ()),
    ("driver_ride_number", ValueType.INTEGER, True,
     "1 for the driver's first ride within the query's range, ...; null without a driver (driver_id 0)",
     f"CASE WHEN driver_id = 0 THEN NULL ELSE row_number() OVER ({_BY_DRIVER}) END", ()),
    ("driver_rides", ValueType.INTEGER, True,
     "The driver's rides within the query's range; null without a driver (driver_id 0)",
     "CASE WHEN driver_id = 0 THEN NULL ELSE count(*) OVER (PARTITION BY driver_id) END", ()),
)  # fmt: skip


def _window_fields() -> list[FieldDef]:
    return [
        FieldDef(
            name=name,
            type=vtype,
            nullable=nullable,
            description=description,
            pg=name,
            duckdb=name,
            es="",
            raw=False,
            dimension=True,
            measurable=False,
            choices=choices,
            window_sql=sql,
            domain=_DOMAINS.get(name, 0),
        )
        for name, vtype, nullable, description, sql, choices in _WINDOWS
    ]


FIELDS: dict[str, FieldDef] = {f.name: f for f in (*_raw_fields(), *_enriched_fields(), *_window_fields())}

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
