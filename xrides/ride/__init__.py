"""The single definition of a ride: fields, parser, wire envelope and derived schemas."""

from xrides.ride.dates import DEFAULT_ZONE, format_timestamp, parse_timestamp
from xrides.ride.envelope import RideEnvelope, decode_envelope, new_version
from xrides.ride.fields import FIELDS_BY_NAME, RIDE_FIELDS, FieldSpec, Kind
from xrides.ride.model import FieldError, Ride, RideValidationError, parse_ride
from xrides.ride.schemas import (
    elasticsearch_properties,
    example_ride,
    parquet_schema,
    postgres_columns,
    ride_json_schema,
)

__all__ = [
    "DEFAULT_ZONE",
    "FIELDS_BY_NAME",
    "RIDE_FIELDS",
    "FieldError",
    "FieldSpec",
    "Kind",
    "Ride",
    "RideEnvelope",
    "RideValidationError",
    "decode_envelope",
    "elasticsearch_properties",
    "example_ride",
    "format_timestamp",
    "new_version",
    "parquet_schema",
    "parse_ride",
    "parse_timestamp",
    "postgres_columns",
    "ride_json_schema",
]
