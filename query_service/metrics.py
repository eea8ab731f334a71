"""Prometheus metrics of the query service. Labels are bounded: route templates, backends, outcomes,
reasons; never a key, a query or an id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "xrides_query_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "xrides_query_request_duration_seconds",
    "HTTP request latency by route template",
    ["route"],
    buckets=_SECONDS,
)
RUNS = Counter(
    "xrides_query_runs_total",
    "Queries run, by backend and outcome (ok, refused, busy, timeout, unavailable, error)",
    ["backend", "outcome"],
)
RUN_SECONDS = Histogram(
    "xrides_query_run_duration_seconds", "Time to answer a query, by backend", ["backend"], buckets=_SECONDS
)
ROWS = Histogram(
    "xrides_query_rows_returned",
    "Rows in an answer, by backend",
    ["backend"],
    buckets=(0, 1, 10, 100, 1000, 10_000),
)
IN_FLIGHT = Gauge("xrides_query_in_flight", "Queries running now")
MAX_CONCURRENT = Gauge("xrides_query_max_concurrent", "Queries allowed to run at once (the setting)")
REFUSALS = Counter(
    "xrides_query_refusals_total",
    "Queries refused before or while running, by reason (error code, e.g. query_limit_exceeded, busy)",
    ["reason"],
)
LAG = Gauge(
    "xrides_query_engine_lag_rides", "Acknowledged rides not yet in the engine, last seen", ["backend"]
)
KEYS = Gauge("xrides_query_keys", "API keys the query service accepts now")
KEY_RELOADS = Counter(
    "xrides_query_key_reloads_total", "Reloads of the API keys file by outcome", ["outcome"]
)
SIGNATURE_FAILURES = Counter(
    "xrides_query_signature_failures_total", "Signed requests refused, by reason", ["reason"]
)
