"""The archiver's Prometheus metrics (``xrides_archiver_*``); labels are bounded enums only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS = Counter("xrides_archiver_runs_total", "Archiving runs by outcome", ["outcome"])
DAYS = Counter("xrides_archiver_days_total", "Days processed by action", ["action"])
ROWS = Counter("xrides_archiver_rows_archived_total", "Rows written to the archive")
BYTES = Counter("xrides_archiver_bytes_archived_total", "Parquet bytes written to the archive")
RUN_SECONDS = Histogram(
    "xrides_archiver_run_duration_seconds",
    "Duration of a completed archiving run",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
)
LAST_SUCCESS = Gauge(
    "xrides_archiver_last_success_timestamp_seconds", "When the last archiving run completed"
)
LAST_ARCHIVED_DAY = Gauge(
    "xrides_archiver_last_archived_day_timestamp_seconds", "Start (UTC) of the newest archived day"
)
DAYS_PENDING = Gauge(
    "xrides_archiver_days_pending", "Days past the hot window that hold rides and are not archived yet"
)
ES_INDICES_DELETED = Counter(
    "xrides_archiver_es_indices_deleted_total", "Daily Elasticsearch indices deleted after a verified archive"
)
VERIFY_FAILURES = Counter(
    "xrides_archiver_verification_failures_total", "Problems found by verify (checksums, rows, PostgreSQL)"
)
