"""Prometheus metrics of the API. Labels are bounded: route templates, status codes, reasons."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter(
    "xrides_api_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "xrides_api_request_duration_seconds",
    "HTTP request latency by route template",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("xrides_api_in_flight_requests", "Requests being handled now")
PRODUCE_SECONDS = Histogram(
    "xrides_api_kafka_produce_duration_seconds",
    "Time from send to the broker's acknowledgement of a request's messages",
    buckets=_LATENCY_BUCKETS,
)
PRODUCER_RESETS = Counter(
    "xrides_api_kafka_producer_resets_total",
    "Kafka producers replaced because a reachable broker acknowledged nothing for two delivery timeouts",
)
RIDES_ACCEPTED = Counter("xrides_api_rides_accepted_total", "Rides acknowledged (written to Kafka)")
REJECTS = Counter("xrides_api_rejects_total", "Rejected requests or batch items by reason", ["reason"])
IDEMPOTENT_REPLAYS = Counter(
    "xrides_api_idempotent_replays_total", "Requests answered from the idempotency store, not written again"
)
API_KEYS = Gauge("xrides_api_keys", "API keys the API accepts now (settings plus the keys file)")
KEY_RELOADS = Counter(
    "xrides_api_key_reloads_total", "Reloads of the API keys file by outcome (ok, failed)", ["outcome"]
)
SIGNATURE_FAILURES = Counter(
    "xrides_api_signature_failures_total",
    "Requests refused by HMAC signing checks, by reason (missing, malformed, expired, mismatch, replayed)",
    ["reason"],
)
UNKNOWN_FIELDS = Counter(
    "xrides_api_unknown_fields_total",
    "Unknown fields kept with accepted rides, by name (the first 100 names seen; later ones are 'other')",
    ["field"],
)
QUARANTINED = Counter(
    "xrides_api_quarantined_total", "Refused rides written to the quarantine topic, by outcome", ["outcome"]
)
_FIELD_LABELS: set[str] = set()
_MAX_FIELD_LABELS = 100


def count_unknown_field(name: str) -> None:
    """Count an unknown field under its own name while the label set is small, else under 'other':
    a client sending random keys must not grow the metric without bound."""
    if name not in _FIELD_LABELS and len(_FIELD_LABELS) < _MAX_FIELD_LABELS:
        _FIELD_LABELS.add(name)
    UNKNOWN_FIELDS.labels(name if name in _FIELD_LABELS else "other").inc()
