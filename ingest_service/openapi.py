"""The OpenAPI 3.1 document, built from the ride model so the two cannot drift."""

from __future__ import annotations

from typing import Any

from ingest_service.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from query_dsl.catalog import AGGREGATES, FIELDS, RATIOS, TIME_FIELDS
from xrides.ride import ride_json_schema

_FIELD_ERROR = {
    "type": "object",
    "properties": {k: {"type": "string"} for k in ("field", "code", "expected", "received", "message")},
    "required": ["field", "code", "expected", "received", "message"],
}
_WARNINGS = {
    "type": "array",
    "description": "Unknown fields kept with the ride (code unknown_field_kept), naming the closest field",
    "items": {"$ref": "#/components/schemas/FieldError"},
}
_FAILED = {
    "type": "object",
    "properties": {
        "status": {"const": "Failed"},
        "error_message": {"type": "string"},
        "error_code": {"type": "string"},
        "booking_id": {"type": ["integer", "null"]},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
        "request_id": {
            "type": "string",
            "description": "A refused ride is kept in the quarantine: track it (state refused) by this id",
            "examples": ["q1-77"],
        },
        "status_url": {"type": "string"},
    },
    "required": ["status", "error_message"],
}
_ACCEPTED = {
    "type": "object",
    "properties": {
        "booking_id": {"type": "integer"},
        "status": {"const": "Success"},
        "request_id": {"type": "string", "examples": ["r3-1042"]},
        "status_url": {"type": "string"},
        "warnings": _WARNINGS,
    },
    "required": ["booking_id", "status", "request_id", "status_url"],
}
_BATCH_ITEM = {
    "type": "object",
    "properties": {
        "index": {"type": "integer"},
        "status": {"enum": ["Success", "Failed"]},
        "booking_id": {"type": ["integer", "null"]},
        "request_id": {
            "type": "string",
            "description": "r... when accepted, q... when refused and quarantined",
        },
        "status_url": {"type": "string"},
        "warnings": _WARNINGS,
        "quarantined": {"type": "boolean"},
        "error_message": {"type": "string"},
        "error_code": {"type": "string"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
        "retriable": {"type": "boolean"},
    },
    "required": ["index", "status"],
}
_BATCH = {
    "type": "object",
    "properties": {
        "request_id": {"type": ["string", "null"]},
        "status_url": {"type": ["string", "null"]},
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/BatchItem"}},
    },
    "required": ["accepted", "rejected", "items"],
}
_TRACKED_ITEM = {
    "type": "object",
    "properties": {
        "index": {"type": "integer"},
        "request_id": {"type": "string"},
        "booking_id": {"type": ["integer", "null"]},
        "state": {"enum": ["accepted", "stored", "superseded", "failed", "refused"]},
        "stored_at": {"type": ["string", "null"], "format": "date-time"},
        "reason": {"type": ["string", "null"]},
        "errors": {"type": ["array", "null"], "items": {"$ref": "#/components/schemas/FieldError"}},
        "replayed_as": {
            "type": ["string", "null"],
            "description": "a refused ride stored by a quarantine replay",
        },
    },
    "required": ["request_id", "state"],
}
_TRACKING = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "state": {"enum": ["accepted", "stored", "failed", "refused", "partially_failed"]},
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/TrackedItem"}},
    },
    "required": ["request_id", "state", "items"],
}


_STATE = {
    "type": "object",
    "properties": {
        "status": {"enum": ["up", "down", "unreachable"]},
        "critical": {"type": "boolean"},
        "latency_ms": {"type": "number"},
        "detail": {"type": "string"},
    },
    "required": ["status", "critical"],
}
_HEALTH = {
    "type": "object",
    "properties": {
        "status": {"enum": ["ok", "degraded", "down"]},
        "checked_at": {"type": "string", "format": "date-time"},
        "dependencies": {
            "type": "object",
            "properties": dict.fromkeys(("kafka", "postgres", "elasticsearch", "s3"), _STATE),
            "required": ["kafka", "postgres", "elasticsearch", "s3"],
        },
        "processes": {"type": "object", "additionalProperties": _STATE},
    },
    "required": ["status", "checked_at", "dependencies", "processes"],
}


_BACKEND = {
    "name": "backend",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["auto", "postgres", "elasticsearch", "archive"], "default": "auto"},
}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "Malformed JSON or body",
        401: "No or unknown API key; or a missing, wrong, late or replayed request signature",
        403: "Key without the needed scope",
        404: "Unknown id",
        408: "Body not received in time",
        409: "Idempotency-Key reused with another body",
        413: "Body or batch over the limit",
        415: "Unsupported Content-Type",
        422: "The ride broke the contract (every field error listed)",
        429: "Rate limited (Retry-After, RateLimit-* headers)",
        503: "Kafka unavailable or overloaded: not accepted, retry after Retry-After",
        504: "The query ran past its time limit",
    }
    return {str(c): {"description": texts[c], "content": _json("Failed")} for c in codes}


def query_schema() -> dict[str, Any]:
    """The query DSL's JSON form, with the catalog's names as enums (docs/query-dsl.md has the grammar).

    An aggregation has ``measures``; a listing of rides has ``select`` instead."""
    fields = sorted(FIELDS)
    measure_names = sorted([*AGGREGATES, *RATIOS])
    return {
        "type": "object",
        "required": ["time_range"],
        "additionalProperties": False,
        "properties": {
            "measures": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "oneOf": [
                        {
                            "type": "string",
                            "description": "count, a catalog ratio, or aggregate(field[, arg]) such as "
                            "count_distinct(user_id) or percentile(lead_time_min, 95)",
                            "examples": measure_names,
                        },
                        {
                            "type": "object",
                            "required": ["fn"],
                            "properties": {
                                "fn": {"type": "string", "enum": sorted([*AGGREGATES, *RATIOS])},
                                "field": {"type": "string", "enum": fields},
                                "p": {"type": "number"},
                                "as": {"type": "string"},
                                "where": {
                                    "type": ["object", "string"],
                                    "description": "a filtered measure: only the rides where this holds",
                                },
                            },
                        },
                        {
                            "type": "object",
                            "required": ["calc", "as"],
                            "properties": {
                                "calc": {
                                    "type": "string",
                                    "description": "arithmetic over earlier measures: cancelled / count",
                                },
                                "as": {"type": "string"},
                            },
                        },
                    ]
                },
            },
            "dimensions": {
                "type": "array",
                "items": {
                    "oneOf": [
                        {"type": "string", "description": "a catalog field, or hour(from_date) style"},
                        {
                            "type": "object",
                            "description": "{time, unit, zone}, {geohash, precision} or {histogram, width}",
                        },
                    ]
                },
            },
            "filter": {"type": ["object", "string"], "description": "and/or/not tree, or a KQL-like string"},
            "time_range": {
                "oneOf": [
                    {"type": "string", "examples": ["last 7 days", "this week"]},
                    {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}}},
                ]
            },
            "zone": {"type": "string", "description": "IANA time zone", "examples": ["Asia/Kolkata"]},
            "having": {"type": ["object", "array", "string"], "description": "conditions on measures"},
            "order": {"type": ["array", "string"], "description": "-count, or {by, desc}"},
            "limit": {"type": "integer", "minimum": 1},
            "compare": {"type": ["string", "object"], "examples": ["previous_period"]},
            "per": {
                "type": "array",
                "items": {"type": "string"},
                "description": "top `limit` rows per group",
            },
            "fill": {"type": "string", "enum": ["zero"], "description": "every time bucket, empty ones too"},
            "time_field": {
                "type": "string",
                "enum": list(TIME_FIELDS),
                "description": "what the range applies to",
            },
            "select": {
                "type": "array",
                "items": {"type": "string", "enum": fields},
                "description": "a listing of rides (instead of measures)",
            },
            "cursor": {"type": "string", "description": "a listing's next page: the previous next_cursor"},
            "params": {"type": "object", "description": "values of $name parameters, bound by value"},
        },
        "x-catalog-fields": fields,
    }


_QUERY_RESULT = {
    "type": "object",
    "required": ["backend", "range", "columns", "rows"],
    "properties": {
        "backend": {"type": "string", "enum": ["postgres", "elasticsearch", "archive"]},
        "backend_reason": {"type": "string"},
        "range": {"type": "object"},
        "previous_range": {"type": "object"},
        "columns": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string"},
                    "exact": {"type": "boolean"},
                    "tolerance": {"type": "number"},
                },
            },
        },
        "rows": {"type": "array", "items": {"type": "array"}},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "next_cursor": {"type": "string", "description": "a listing with more rows: send it as cursor"},
        "freshness": {
            "type": "object",
            "description": "the engine's newest ride, its consumer lag and dead letters (null: unknown)",
        },
    },
}


def build_openapi() -> dict[str, Any]:
    ride_body = {"required": True, "content": _json("Ride")}
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 200},
        "description": "Retries with the same key return the first answer (24 h window).",
    }
    single = {
        "summary": "Submit one ride; 202 only once Kafka has it (acks=all)",
        "parameters": [idem],
        "requestBody": ride_body,
        "responses": {
            "202": {"description": "Accepted and durable", "content": _json("Accepted")},
            **_errors(400, 401, 403, 408, 409, 413, 415, 422, 429, 503),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "XRides ride ingestion API",
            "version": "1.0.0",
            "description": "Acknowledges a ride only once it is durably in Kafka; every ride is trackable.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key with a scope"},
                # Optional HMAC signing (docs/security.md): both headers, with the bearer key.
                "signatureTimestamp": {
                    "type": "apiKey",
                    "in": "header",
                    "name": TIMESTAMP_HEADER,
                    "description": "Unix seconds; within 300 s of the server's clock",
                },
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": SIGNATURE_HEADER,
                    "description": (
                        "v1=<hex HMAC-SHA256 with the key's signing secret of"
                        ' "<timestamp>.<METHOD>.<path?query>." followed by the raw body>;'
                        " each signature is accepted once. Keys configured with signing=required"
                        " must send it."
                    ),
                },
            },
            "schemas": {
                "Ride": ride_json_schema(),
                "FieldError": _FIELD_ERROR,
                "Failed": _FAILED,
                "Accepted": _ACCEPTED,
                "BatchItem": _BATCH_ITEM,
                "Batch": _BATCH,
                "TrackedItem": _TRACKED_ITEM,
                "Tracking": _TRACKING,
                "Query": query_schema(),
                "QueryResult": _QUERY_RESULT,
                "Health": _HEALTH,
            },
        },
        "security": [{"bearer": []}, {"bearer": [], "signatureTimestamp": [], "signature": []}],
        "paths": {
            "/v1/rides": {"post": {**single, "operationId": "postRide"}},
            "/xride_data": {"post": {**single, "operationId": "postRideLegacy", "deprecated": True}},
            "/v1/rides/batch": {
                "post": {
                    "operationId": "postRideBatch",
                    "summary": "Submit up to max_batch_items rides (JSON array or NDJSON)",
                    "parameters": [idem],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Ride"}}
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "202": {"description": "Every item accepted", "content": _json("Batch")},
                        "207": {
                            "description": "Some items accepted, some rejected",
                            "content": _json("Batch"),
                        },
                        "422": {"description": "Every item rejected", "content": _json("Batch")},
                        **_errors(400, 401, 403, 408, 409, 413, 415, 429, 503),
                    },
                }
            },
            "/v1/requests/{request_id}": {
                "get": {
                    "operationId": "getRequest",
                    "summary": "Lifecycle of a request: accepted -> stored | failed, or refused, per item",
                    "parameters": [
                        {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {"description": "State", "content": _json("Tracking")},
                        **_errors(401, 404, 503),
                    },
                }
            },
            "/v1/rides/{booking_id}": {
                "get": {
                    "operationId": "getRide",
                    "summary": "The latest stored version of a ride",
                    "parameters": [
                        {
                            "name": "booking_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    ],
                    "responses": {"200": {"description": "The stored ride"}, **_errors(400, 401, 404, 503)},
                }
            },
            "/v1/quarantine/replay": {
                "post": {
                    "operationId": "replayQuarantine",
                    "summary": "Re-validate refused rides under the current contract; store what passes"
                    " (admin scope)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "since": {"type": "string", "format": "date-time"},
                                        "until": {"type": "string", "format": "date-time"},
                                        "dry_run": {"type": "boolean", "default": False},
                                        "limit": {"type": "integer", "minimum": 1, "maximum": 100000},
                                    },
                                    "required": ["since"],
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "considered, replayed, still_refused; quarantine id -> new id",
                        },
                        **_errors(400, 401, 403, 408, 413, 415, 503),
                    },
                }
            },
            "/v1/query": {
                "post": {
                    "operationId": "postQuery",
                    "summary": "Run a query DSL query (API key with the query scope); forwarded to the "
                    "query service",
                    "parameters": [_BACKEND],
                    "requestBody": {"required": True, "content": _json("Query")},
                    "responses": {
                        "200": {"description": "Columns and rows", "content": _json("QueryResult")},
                        **_errors(400, 401, 403, 413, 415, 422, 429, 503, 504),
                    },
                }
            },
            "/v1/query/explain": {
                "post": {
                    "operationId": "explainQuery",
                    "summary": "The resolved query, the SQL with its parameters or the Elasticsearch body",
                    "parameters": [_BACKEND],
                    "requestBody": {"required": True, "content": _json("Query")},
                    "responses": {
                        "200": {
                            "description": "The plan",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(400, 401, 403, 413, 415, 422, 429, 503),
                    },
                }
            },
            "/v1/health": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "State of Kafka, PostgreSQL, Elasticsearch, S3 and the platform processes",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Critical dependencies up (ok or degraded)",
                            "content": _json("Health"),
                        },
                        "503": {"description": "Kafka or PostgreSQL down", "content": _json("Health")},
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "security": [],
                    "responses": {"200": {"description": "Alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "security": [],
                    "responses": {
                        "200": {"description": "Kafka reachable"},
                        "503": {"description": "Not ready"},
                    },
                }
            },
        },
    }
