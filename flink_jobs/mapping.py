"""Index templates, derived from the ride contract plus the enriched fields."""

from __future__ import annotations

from typing import Any

from xrides.ride import elasticsearch_properties

ENRICHED_PROPERTIES: dict[str, dict[str, Any]] = {
    "distance_km": {"type": "double"},
    "lead_time_min": {"type": "double"},
    "trip_duration_min": {"type": "double"},
    "hour_of_day": {"type": "byte"},
    "day_of_week": {"type": "byte"},
    "is_weekend": {"type": "boolean"},
    "booking_channel": {"type": "keyword"},
    "pickup": {"type": "geo_point"},
    "dropoff": {"type": "geo_point"},
    "is_cancelled": {"type": "boolean"},
    "quality": {
        "properties": {
            name: {"type": "boolean"}
            for name in (
                "dropoff_before_pickup",
                "booked_after_pickup",
                "outside_service_region",
                "missing_coordinates",
            )
        }
    },
}

METADATA_PROPERTIES: dict[str, dict[str, Any]] = {
    "version": {"type": "long"},
    "received_at": {"type": "date"},
}


def template_name(prefix: str) -> str:
    """The index template's name for a prefix: ``xrides-rides`` for the platform's ``rides-``."""
    return f"xrides-{prefix.strip('-.')}"


def rides_template(prefix: str) -> dict[str, Any]:
    """``<prefix>*`` (daily ride indices): explicit mapping, unknown fields refused (dynamic strict)."""
    return {
        "index_patterns": [f"{prefix}*"],
        "priority": 100,
        "template": {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"},
            "mappings": {
                "dynamic": "strict",
                "properties": {**elasticsearch_properties(), **ENRICHED_PROPERTIES, **METADATA_PROPERTIES},
            },
        },
    }
