"""Index templates, derived from the ride contract plus the enriched fields."""

from __future__ import annotations

from typing import Any

from xrides.ride import elasticsearch_properties
from xrides.ride.enrich import DERIVED_FIELDS

ENRICHED_PROPERTIES: dict[str, dict[str, Any]] = {
    **{d.name: {"type": d.es_type} for d in DERIVED_FIELDS},
    "pickup": {"type": "geo_point"},
    "dropoff": {"type": "geo_point"},
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


def demand_template(prefix: str) -> dict[str, Any]:
    """``<prefix>*`` (5-minute demand windows, flink_jobs/demand.py): explicit, strict mapping."""
    return {
        "index_patterns": [f"{prefix}*"],
        "priority": 100,
        "template": {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"},
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "area_id": {"type": "keyword"},
                    "window_start": {"type": "date"},
                    "window_end": {"type": "date"},
                    "rides": {"type": "integer"},
                    "cancellations": {"type": "integer"},
                    "updated_at": {"type": "date"},
                },
            },
        },
    }


# ECS fields the platform's log lines carry (xrides/logs.py); other ``extra=`` keys are kept in
# _source but not indexed (dynamic: false), so one odd key cannot break or bloat the mapping.
LOG_PROPERTIES: dict[str, dict[str, Any]] = {
    "@timestamp": {"type": "date"},
    "message": {"type": "text"},
    "log": {"properties": {"level": {"type": "keyword"}, "logger": {"type": "keyword"}}},
    "service": {"properties": {"name": {"type": "keyword"}}},
    "event": {"properties": {"id": {"type": "keyword"}}},
    "request": {"properties": {"id": {"type": "keyword"}}},
    "booking_id": {"type": "keyword"},
    "kafka": {
        "properties": {
            "topic": {"type": "keyword"},
            "partition": {"type": "integer"},
            "offset": {"type": "long"},
        }
    },
    "http": {
        "properties": {
            "request": {"properties": {"method": {"type": "keyword"}}},
            "response": {"properties": {"status_code": {"type": "short"}}},
        }
    },
    "url": {"properties": {"path": {"type": "keyword"}}},
    "error": {"properties": {"message": {"type": "text"}, "stack_trace": {"type": "text", "index": False}}},
}


def logs_template(prefix: str) -> dict[str, Any]:
    """``<prefix>*`` (daily log indices). Dotted ECS keys (``request.id``) map as object paths.

    Priority 200: Elasticsearch's built-in ``logs`` template (data streams ``logs-*-*``, priority
    100) would otherwise overlap; ``logs-YYYY.MM.DD`` has no second dash and never is one.
    """
    return {
        "index_patterns": [f"{prefix}*"],
        "priority": 200,
        "template": {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"},
            "mappings": {"dynamic": False, "properties": LOG_PROPERTIES},
        },
    }
