"""The catalog: the only names a query may use, and what each means on every backend.

Raw fields are derived from :data:`xrides.ride.RIDE_FIELDS`; enriched fields from
:data:`xrides.ride.enrich.DERIVED_FIELDS`, whose SQL forms sit beside the Python formulas the stream
job stores in Elasticsearch (which here has no scripts). Every expression is built from those
constants: SQL identifiers never come from a query.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from xrides.ride import DEFAULT_ZONE, RIDE_FIELDS, Kind
from xrides.ride.enrich import DERIVED_FIELDS

SERVICE_ZONE = DEFAULT_ZONE  # the zone of hour_of_day, day_of_week and is_weekend (as Flink computes them)


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


_VALUE_TYPES = {
    "integer": ValueType.INTEGER,
    "number": ValueType.NUMBER,
    "string": ValueType.STRING,
    "boolean": ValueType.BOOLEAN,
}


def _enriched_fields() -> list[FieldDef]:
    """The enrichment's fields, with the SQL forms defined beside its Python formulas."""
    return [
        FieldDef(
            name=d.name,
            type=_VALUE_TYPES[d.value_type],
            nullable=d.nullable,
            description=d.description.replace("the service zone", SERVICE_ZONE),
            pg=d.sql("pg", SERVICE_ZONE),
            duckdb=d.sql("duckdb", SERVICE_ZONE),
            es=d.name,
            raw=False,
            dimension=d.dimension,
            measurable=not d.dimension,
            choices=d.choices,
        )
        for d in DERIVED_FIELDS
    ]


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
