"""The persister's own metrics; the loop's (batches, lag, retries, dead letters) are
``xrides_persister_*`` from xrides/worker.py's WorkerMetrics, built in persister/cli.py."""

from __future__ import annotations

from prometheus_client import Counter

ROWS_UPSERTED = Counter("xrides_persister_rows_upserted_total", "Ride versions written to cab_rides")
SUPERSEDED = Counter(
    "xrides_persister_superseded_total", "Messages not applied because a newer version was stored"
)
