"""Index templates, derived from the ride contract plus the enriched fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xrides.ride import RIDE_FIELDS, elasticsearch_properties
from xrides.ride.enrich import DERIVED_FIELDS
from xrides.ride.quality import FLAG_NAMES
from xrides.ride.schemas import Fields

ENRICHED_PROPERTIES: dict[str, dict[str, Any]] = {
    **{d.name: {"type": d.es_type} for d in DERIVED_FIELDS},
    "pickup": {"type": "geo_point"},
    "dropoff": {"type": "geo_point"},
    # every data-quality flag (xrides/ride/quality.py) and the enrichment's own one, filterable
    "quality": {
        "properties": {name: {"type": "boolean"} for name in (*FLAG_NAMES, "outside_service_region")}
    },
}

# What the parser learned beside the fields (as in PostgreSQL's cab_rides): a bare date's day, the
# unknown fields kept as sent (flattened: every key searchable as a keyword, no mapping per key),
# and the contract version the ride was accepted under.
STORED_PROPERTIES: dict[str, dict[str, Any]] = {
    **{f"{f.name}_day": {"type": "date", "format": "strict_date"} for f in RIDE_FIELDS if f.date_only},
    "extras": {"type": "flattened"},
    "contract_version": {"type": "short"},
}

METADATA_PROPERTIES: dict[str, dict[str, Any]] = {
    "version": {"type": "long"},
    "received_at": {"type": "date"},
}


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """What differs between deployments: the replica count (0 on one node; 1 on a cluster, so a
    node lost loses no shard) and whether ILM owns retention (a full Elasticsearch; the minimal
    distribution the local stack runs has no ILM, and the archiver deletes archived days there)."""

    replicas: int = 0
    lifecycle: bool = False


# ILM policies (when ``lifecycle``): delete an index this long after the UTC day in its name
# (``parse_origination_date``). Rides stay a little past the 60 hot days: the archiver deletes a
# day's index once it is archived; ILM is the backstop, and PostgreSQL and S3 keep every ride.
LIFECYCLE_DAYS = {"rides": 63, "ride-demand": 60, "logs": 14, "failed-rides": 90}


def lifecycle_policy(family: str) -> tuple[str, dict[str, Any]]:
    """The ILM policy of a family of daily indices: its name and body (``PUT _ilm/policy/<name>``)."""
    days = LIFECYCLE_DAYS[family]
    body = {
        "policy": {
            "phases": {"hot": {"actions": {}}, "delete": {"min_age": f"{days}d", "actions": {"delete": {}}}}
        }
    }
    return f"xrides-{family}-{days}d", body


def index_settings(family: str, index: IndexSettings) -> dict[str, Any]:
    """A template's index settings: one shard per daily index, the deployment's replicas, and the
    family's lifecycle policy when ILM owns retention."""
    out: dict[str, Any] = {
        "number_of_shards": 1,
        "number_of_replicas": index.replicas,
        "refresh_interval": "1s",
    }
    if index.lifecycle:
        out["index.lifecycle.name"] = lifecycle_policy(family)[0]
        out["index.lifecycle.parse_origination_date"] = True
    return out


def template_name(prefix: str) -> str:
    """The index template's name for a prefix: ``xrides-rides`` for the platform's ``rides-``."""
    return f"xrides-{prefix.strip('-.')}"


def ride_properties(fields: Fields = RIDE_FIELDS) -> dict[str, Any]:
    """Every property of a ride document: the contract's fields (a field added to the table is a
    property here too), the enrichment, what the parser stored beside them, the version."""
    return {
        **elasticsearch_properties(fields),
        **ENRICHED_PROPERTIES,
        **STORED_PROPERTIES,
        **METADATA_PROPERTIES,
    }


def rides_template(
    prefix: str, fields: Fields = RIDE_FIELDS, index: IndexSettings = IndexSettings()
) -> dict[str, Any]:
    """``<prefix>*`` (daily ride indices): explicit mapping, unknown fields refused (dynamic strict).

    A new field reaches indices created before it through ``put_mapping`` of the same properties
    (the indexer does it at start: xrides/search/templates.py ``ride_properties``)."""
    return {
        "index_patterns": [f"{prefix}*"],
        "priority": 100,
        "template": {
            "settings": index_settings("rides", index),
            "mappings": {
                "dynamic": "strict",
                "properties": ride_properties(fields),
            },
        },
    }


def demand_template(prefix: str, index: IndexSettings = IndexSettings()) -> dict[str, Any]:
    """``<prefix>*`` (5-minute demand windows, flink_jobs/demand.py): explicit, strict mapping."""
    return {
        "index_patterns": [f"{prefix}*"],
        "priority": 100,
        "template": {
            "settings": index_settings("ride-demand", index),
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


def logs_template(prefix: str, index: IndexSettings = IndexSettings()) -> dict[str, Any]:
    """``<prefix>*`` (daily log indices). Dotted ECS keys (``request.id``) map as object paths.

    Priority 200: Elasticsearch's built-in ``logs`` template (data streams ``logs-*-*``, priority
    100) would otherwise overlap; ``logs-YYYY.MM.DD`` has no second dash and never is one.
    """
    return {
        "index_patterns": [f"{prefix}*"],
        "priority": 200,
        "template": {
            "settings": index_settings("logs", index),
            "mappings": {"dynamic": False, "properties": LOG_PROPERTIES},
        },
    }


# A refused ride (xrides/quarantine.py) as Kibana shows it: who sent what, when, and every error.
FAILED_RIDE_PROPERTIES: dict[str, dict[str, Any]] = {
    "request_id": {"type": "keyword"},
    "refused_at": {"type": "date"},
    "booking_id": {"type": "long"},
    "key_id": {"type": "keyword"},
    "contract_version": {"type": "short"},
    "errors": {
        "properties": {
            "field": {"type": "keyword"},
            "code": {"type": "keyword"},
            "expected": {"type": "keyword", "index": False},
            "received": {"type": "keyword", "index": False},
            "message": {"type": "text"},
        }
    },
    "error_fields": {"type": "keyword"},
    "error_codes": {"type": "keyword"},
    "body": {"type": "text", "index": False},
}


def failed_rides_template(prefix: str, index: IndexSettings = IndexSettings()) -> dict[str, Any]:
    """``<prefix>*`` (daily indices of refused rides, by the day they were refused)."""
    return {
        "index_patterns": [f"{prefix}*"],
        "priority": 100,
        "template": {
            "settings": index_settings("failed-rides", index),
            "mappings": {"dynamic": "strict", "properties": FAILED_RIDE_PROPERTIES},
        },
    }
