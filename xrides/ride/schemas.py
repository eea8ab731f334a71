"""Every storage and interface schema of the ride, derived from :data:`RIDE_FIELDS`.

One function per consumer of the contract: JSON Schema (OpenAPI 3.1), PostgreSQL column types,
the Elasticsearch mapping of the raw ride fields, and the Parquet (Arrow) schema. Tests compare the
live database, index and files against these, so nobody edits a copy by hand. Each takes the field
table as an argument (the current one by default), so a test can add a field and see every schema
follow it.
"""

from __future__ import annotations

from typing import Any

from xrides.ride.fields import INT32_MAX, INT64_MAX, RIDE_FIELDS, FieldSpec, Kind

Fields = tuple[FieldSpec, ...]

_EXAMPLE: dict[str, Any] = {
    "booking_id": 132512,
    "user_id": 22177,
    "vehicle_model_id": 28,
    "package_id": None,
    "travel_type_id": 2,
    "from_area_id": 83,
    "to_area_id": 448,
    "from_city_id": None,
    "to_city_id": None,
    "from_date": "1/1/2013 2:00:00",
    "to_date": None,
    "online_booking": 0,
    "mobile_site_booking": 0,
    "booking_created": "1/1/2013 1:39:00",
    "from_lat": 12.92415,
    "from_long": 77.67229,
    "to_lat": 12.92732,
    "to_long": 77.63575,
    "driver_id": 0,
}


def example_ride() -> dict[str, Any]:
    """The prototype's example ride, as XRides sends it."""
    return dict(_EXAMPLE)


def _json_type(spec: FieldSpec) -> dict[str, Any]:
    kind = spec.kind
    schema: dict[str, Any]
    if kind is Kind.ID:
        schema = {"type": "integer", "minimum": 1 if spec.name == "booking_id" else 0, "maximum": INT64_MAX}
    elif kind is Kind.INT:
        schema = {"type": "integer", "minimum": 0, "maximum": INT32_MAX}
    elif kind is Kind.FLAG:
        schema = {"type": "integer", "enum": [0, 1]}
    elif kind is Kind.LATITUDE:
        schema = {"type": "number", "minimum": -90, "maximum": 90}
    elif kind is Kind.LONGITUDE:
        schema = {"type": "number", "minimum": -180, "maximum": 180}
    else:
        schema = {
            "type": "string",
            "description": "month/day/year hour:minute[:second] in local time, or ISO 8601"
            + (
                "; or a bare date (month/day/year, YYYY-MM-DD) when only the day is known"
                if spec.date_only
                else ""
            ),
            "examples": ["1/1/2013 2:00:00", "2013-01-01T02:00:00+05:30"]
            + (["1/2/2013"] if spec.date_only else []),
        }
    if spec.nullable:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema


def ride_json_schema(fields: Fields = RIDE_FIELDS) -> dict[str, Any]:
    """JSON Schema (2020-12, as used by OpenAPI 3.1) of one ride.

    Other properties are allowed: the platform keeps unknown fields with the ride and names them in
    the answer's warnings (a key in strict mode refuses them). A ride also needs ``from_area_id``
    or ``from_city_id`` (``anyOf``)."""
    properties: dict[str, Any] = {}
    for spec in fields:
        prop = _json_type(spec)
        prop["description"] = spec.description + (f". {prop['description']}" if "description" in prop else "")
        if spec.since > 1:
            prop["description"] += f" (since contract {spec.since})"
        properties[spec.name] = prop
    return {
        "type": "object",
        "additionalProperties": True,
        "required": [f.name for f in fields if f.required],
        "properties": properties,
        "anyOf": [
            {"properties": {name: {"type": "integer"}}, "required": [name]}
            for name in ("from_area_id", "from_city_id")
        ],
        "examples": [example_ride()],
    }


_PG_TYPES = {
    Kind.ID: "bigint",
    Kind.INT: "integer",
    Kind.FLAG: "smallint",
    # Unconstrained numeric keeps exactly the decimal digits the client sent.
    Kind.LATITUDE: "numeric",
    Kind.LONGITUDE: "numeric",
    Kind.TIMESTAMP: "timestamp with time zone",
}


def postgres_columns(fields: Fields = RIDE_FIELDS) -> dict[str, tuple[str, bool]]:
    """Column name -> (PostgreSQL type as information_schema spells it, nullable)."""
    return {f.name: (_PG_TYPES[f.kind], f.nullable) for f in fields}


_ES_TYPES = {
    Kind.ID: "long",
    Kind.INT: "integer",
    Kind.FLAG: "byte",
    Kind.LATITUDE: "double",
    Kind.LONGITUDE: "double",
    Kind.TIMESTAMP: "date",
}


def elasticsearch_properties(fields: Fields = RIDE_FIELDS) -> dict[str, dict[str, str]]:
    """Mapping of the raw ride fields; ids are also keyword-searchable through ``booking_id``'s type."""
    return {f.name: {"type": _ES_TYPES[f.kind]} for f in fields}


def parquet_schema(fields: Fields = RIDE_FIELDS) -> Any:
    """The Arrow schema of archived rides (imported lazily: pyarrow is heavy)."""
    import pyarrow as pa  # noqa: PLC0415

    types = {
        Kind.ID: pa.int64(),
        Kind.INT: pa.int32(),
        Kind.FLAG: pa.int8(),
        Kind.LATITUDE: pa.float64(),
        Kind.LONGITUDE: pa.float64(),
        Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([pa.field(f.name, types[f.kind], nullable=f.nullable) for f in fields])
