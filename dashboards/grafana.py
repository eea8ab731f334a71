"""The SREs' Grafana dashboard, each panel's PromQL defined once.

``python -m dashboards generate`` writes :func:`dashboard` to ``dashboards/grafana/xrides.json``,
which docker-compose's Grafana provisions (deploy/compose/grafana/dashboards.yml) against the
Prometheus datasource of uid ``prometheus``. The queries use the metric names the processes
expose (``ingest_service/metrics.py``, ``persister/metrics.py``, ``indexer/sink.py``,
``archiver/metrics.py``, ``reconcile/metrics.py``) and the scrape jobs named after the platform
registry (``deploy/stack/platform.py``), so the same dashboard works on the local stack and on
Docker; the integration test runs every query against the local Prometheus.

Elasticsearch and PostgreSQL have no exporter in either stack: their health is shown as the
platform's clients see it (indexer bulk latency and failures, persister commit age, write latency
and retries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DASHBOARD_UID = "xrides-platform"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
INGEST_ROUTES = "/v1/rides|/v1/rides/batch|/xride_data"  # as in dashboards/prometheus/rules/api.yml


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    width: int = 8
    kind: str = "timeseries"  # or stat


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def _quantiles(metric: str, selector: str = "", window: str = "5m") -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{selector}[{window}])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    )


ROWS: tuple[Row, ...] = (
    Row(
        "Ingest API",
        (
            Panel(
                "Rides acknowledged per second",
                "Rides written to Kafka (acks=all) and ingest requests by route.",
                "reqps",
                (
                    Query("sum(rate(xrides_api_rides_accepted_total[1m]))", "rides acknowledged"),
                    Query(
                        f'sum by (route) (rate(xrides_api_requests_total{{route=~"{INGEST_ROUTES}"}}[1m]))',
                        "{{route}} requests",
                    ),
                ),
            ),
            Panel(
                "Acknowledgement latency (single-ride POST)",
                "Time to the 202, which is sent once Kafka acknowledged the ride. SLO: p99 < 25 ms.",
                "s",
                _quantiles(
                    "xrides_api_request_duration_seconds", '{route=~"/v1/rides|/xride_data",method="POST"}'
                ),
            ),
            Panel(
                "Kafka produce latency",
                "From send to the broker's acknowledgement, inside the API.",
                "s",
                _quantiles("xrides_api_kafka_produce_duration_seconds"),
            ),
            Panel(
                "Errors by status",
                "API answers with a 4xx or 5xx status, by status code.",
                "reqps",
                (
                    Query(
                        'sum by (status) (rate(xrides_api_requests_total{status=~"4..|5.."}[5m]))',
                        "{{status}}",
                    ),
                ),
            ),
            Panel(
                "Rejections by reason",
                "Rejected requests or batch items by error code (invalid_ride, broker_unavailable...).",
                "reqps",
                (Query("sum by (reason) (rate(xrides_api_rejects_total[5m]))", "{{reason}}"),),
            ),
            Panel(
                "Requests in flight",
                "Requests being handled now (the API sheds load past its limit).",
                "short",
                (Query("sum(xrides_api_in_flight_requests)", "in flight"),),
            ),
        ),
    ),
    Row(
        "Persister: Kafka to PostgreSQL",
        (
            Panel(
                "Consumer lag",
                "Messages of the rides topic not yet stored, by partition.",
                "short",
                (
                    Query(
                        "sum by (partition) (xrides_persister_consumer_lag_messages)",
                        "partition {{partition}}",
                    ),
                    Query("sum(xrides_persister_consumer_lag_messages)", "total"),
                ),
            ),
            Panel(
                "Rows stored per second",
                "Ride versions upserted into cab_rides; superseded: older versions not applied.",
                "short",
                (
                    Query("sum(rate(xrides_persister_rows_upserted_total[1m]))", "stored"),
                    Query("sum(rate(xrides_persister_superseded_total[1m]))", "superseded"),
                ),
            ),
            Panel(
                "Dead letters",
                "Messages sent to rides.dlq, by reason (see ingest_failures): in the last hour, and since the"
                " persister started (increase() misses the first of a reason, which creates the series).",
                "short",
                (
                    Query(
                        "sum by (reason) (increase(xrides_persister_dead_letters_total[1h]))",
                        "{{reason}} last hour",
                    ),
                    Query("sum by (reason) (xrides_persister_dead_letters_total)", "{{reason}} since start"),
                ),
            ),
        ),
    ),
    Row(
        "Stream: Flink job and Elasticsearch indexer",
        (
            Panel(
                "Indexer throughput by outcome",
                "rides.es actions from the Flink job applied to Elasticsearch, by outcome.",
                "ops",
                (Query("sum by (outcome) (rate(xrides_indexer_actions_total[1m]))", "{{outcome}}"),),
            ),
            Panel(
                "Flink job and indexer CPU",
                "CPU seconds per second of the job's client process and of the indexer.",
                "percentunit",
                (
                    Query(
                        'sum by (job) (rate(process_cpu_seconds_total{job=~"flink-job|es-indexer"}[1m]))',
                        "{{job}}",
                    ),
                ),
            ),
            Panel(
                "Elasticsearch bulk latency (indexer)",
                "Duration of the indexer's bulk requests: Elasticsearch health as its writer sees it.",
                "s",
                _quantiles("xrides_indexer_bulk_duration_seconds"),
            ),
        ),
    ),
    Row(
        "Stores and targets",
        (
            Panel(
                "Elasticsearch bulk failures",
                "Bulk requests that failed and were retried (Elasticsearch down or refusing).",
                "reqps",
                (Query("sum(rate(xrides_indexer_bulk_failures_total[5m]))", "bulk failures"),),
            ),
            Panel(
                "PostgreSQL: seconds since the last commit",
                "Age of the persister's last committed batch; grows while PostgreSQL is down or idle.",
                "s",
                (Query("time() - max(xrides_persister_last_commit_timestamp_seconds)", "since last commit"),),
            ),
            Panel(
                "PostgreSQL batch write latency and retries",
                "Duration of one batch transaction (p99) and batches retried because PostgreSQL failed.",
                "s",
                (
                    *_quantiles("xrides_persister_batch_seconds")[2:],
                    Query("sum(rate(xrides_persister_db_retries_total[5m]))", "retries/s"),
                ),
            ),
            Panel(
                "Archive: days pending and age of the last run",
                "Days past the hot window not yet archived to S3, and hours since the archiver's last"
                " successful run (hourly schedule; see the archiver alerts).",
                "short",
                (
                    Query("max(xrides_archiver_days_pending)", "days pending"),
                    Query(
                        "(time() - max(xrides_archiver_last_success_timestamp_seconds)) / 3600",
                        "hours since success",
                    ),
                ),
            ),
            Panel(
                "Scrape targets up",
                "1 when Prometheus scrapes the process (every process of the platform registry, and itself).",
                "short",
                (Query("up", "{{job}}"),),
                width=24,
                kind="stat",
            ),
        ),
    ),
    Row(
        "Reconciliation and freshness",
        (
            Panel(
                "Rides per stage, last 7 pickup days",
                "Per pipeline stage, the rides of the last 7 UTC pickup days (and days booked ahead):"
                " acknowledged (Kafka + receipts), stored (PostgreSQL), indexed (Elasticsearch, hot window),"
                " archived (S3), dead-lettered. From reconcile serve; docs/reconciliation.md.",
                "short",
                (Query('max by (stage) (xrides_reconcile_rides{window="7d"})', "{{stage}}"),),
            ),
            Panel(
                "Reconciliation gaps",
                "Bookings one stage holds and the next does not, over every reconciled day, leaving out"
                " rides accepted in the last 5 minutes. Anything above 0 for long alerts;"
                " python -m reconcile run names them.",
                "short",
                (Query('max by (between) (xrides_reconcile_gap_rides{window="total"})', "{{between}}"),),
            ),
            Panel(
                "Data freshness",
                "Age of the newest ride stored in PostgreSQL (stored_at) and indexed in Elasticsearch"
                " (received_at), and time since the last reconciliation (runs every 5 minutes).",
                "s",
                (
                    Query("max by (store) (xrides_reconcile_newest_ride_age_seconds)", "newest in {{store}}"),
                    Query(
                        "time() - max(xrides_reconcile_last_success_timestamp_seconds)",
                        "since last reconciliation",
                    ),
                ),
            ),
        ),
    ),
)


def queries() -> list[tuple[str, Query]]:
    """(panel title, query) for every query of the dashboard."""
    return [(panel.title, query) for row in ROWS for panel in row.panels for query in panel.queries]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"refId": chr(ord("A") + i), "expr": q.expr, "legendFormat": q.legend, "datasource": DATASOURCE}
        for i, q in enumerate(panel.queries)
    ]
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": 8},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
    }
    if panel.kind == "stat":
        out["fieldConfig"]["defaults"]["mappings"] = [
            {
                "type": "value",
                "options": {"0": {"text": "DOWN", "color": "red"}, "1": {"text": "UP", "color": "green"}},
            }
        ]
        out["options"] = {
            "colorMode": "background",
            "graphMode": "none",
            "reduceOptions": {"calcs": ["lastNotNull"]},
        }
    else:
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        }
    return out


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        y += 1
        x = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(panel, len(panels) + 1, x, y))
            x += panel.width
        y += 8
    return {
        "uid": DASHBOARD_UID,
        "title": "XRides platform",
        "description": "Ingest API, persister, stream job and indexer, stores: what the SREs watch.",
        "tags": ["xrides"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "schemaVersion": 41,
        "version": 1,
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }
