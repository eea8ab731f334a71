"""Prometheus metrics of the persister (labels bounded: partitions, reasons)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_ROWS = Histogram(
    "xrides_persister_batch_rows",
    "Messages per written batch",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
)
BATCH_SECONDS = Histogram(
    "xrides_persister_batch_seconds",
    "Time to write one batch to PostgreSQL (one transaction)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ROWS_UPSERTED = Counter("xrides_persister_rows_upserted_total", "Ride versions written to cab_rides")
SUPERSEDED = Counter(
    "xrides_persister_superseded_total", "Messages not applied because a newer version was stored"
)
DEAD_LETTERS = Counter("xrides_persister_dead_letters_total", "Messages dead-lettered, by reason", ["reason"])
CONSUMER_LAG = Gauge(
    "xrides_persister_consumer_lag_messages", "Messages behind the partition's end", ["partition"]
)
LAST_COMMIT = Gauge("xrides_persister_last_commit_timestamp_seconds", "Unix time of the last committed batch")
DB_RETRIES = Counter("xrides_persister_db_retries_total", "Batch writes retried because PostgreSQL failed")
