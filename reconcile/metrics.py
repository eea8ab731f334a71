"""The reconciler's Prometheus metrics (``xrides_reconcile_*``).

No day is ever a label: per-day numbers are summed over two fixed windows, ``7d`` (the last
``recent_days`` pickup days and the days booked ahead) and ``total`` (every day ``serve``
reconciles, ``lookback_days`` back, plus messages whose day cannot be read).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import date, datetime

from prometheus_client import Counter, Gauge, Histogram

from reconcile.report import GAPS, STAGES, DayRow

RIDES = Gauge(
    "xrides_reconcile_rides",
    "Rides per pipeline stage, summed over the window's pickup days",
    ["stage", "window"],
)
GAP = Gauge(
    "xrides_reconcile_gap_rides",
    "Bookings one stage holds and the next does not, accepted before the settle time",
    ["between", "window"],
)
NEWEST_AGE = Gauge(
    "xrides_reconcile_newest_ride_age_seconds",
    "Age of the newest ride: stored_at in PostgreSQL, received_at in Elasticsearch",
    ["store"],
)
LAST_SUCCESS = Gauge(
    "xrides_reconcile_last_success_timestamp_seconds", "When the last reconciliation completed"
)
RUNS = Counter(
    "xrides_reconcile_runs_total", "Reconciliation runs by scope and outcome", ["scope", "outcome"]
)
RUN_SECONDS = Histogram(
    "xrides_reconcile_run_duration_seconds",
    "Duration of a completed reconciliation run",
    ["scope"],
    buckets=(0.5, 1, 2.5, 5, 15, 60, 300, 900),
)
WINDOWS = ("7d", "total")


def publish(windows: dict[str, Iterable[DayRow]]) -> None:
    """Set the stage and gap gauges from the rows of each window."""
    for window in WINDOWS:
        rows = list(windows.get(window, ()))
        for stage in STAGES:
            RIDES.labels(stage, window).set(sum(r.stage(stage) for r in rows))
        for between in GAPS:
            GAP.labels(between, window).set(sum(r.gap(between) for r in rows))


def publish_newest(newest: dict[str, datetime | None]) -> None:
    """The age is computed when Prometheus scrapes, so it keeps growing if runs stop."""
    for store, moment in newest.items():
        if moment is None:
            continue
        NEWEST_AGE.labels(store).set_function(_age_of(moment.timestamp()))


def _age_of(stamp: float) -> Callable[[], float]:
    return lambda: max(0.0, time.time() - stamp)


def in_window(day: date | None, first: date, last: date, unknown: bool) -> bool:
    return unknown if day is None else first <= day <= last
