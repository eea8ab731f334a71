"""The reconciler's pure parts and GET /v1/health's contract (no network)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import jsonschema
import orjson
from prometheus_client import REGISTRY

from deploy.stack.envfile import stack_variables
from deploy.stack.platform import REGISTRY as PROCESSES
from ingest_service.health import peers
from ingest_service.openapi import build_openapi
from ingest_service.settings import ApiSettings
from reconcile import metrics
from reconcile.cli import Windows
from reconcile.reconciler import _runs
from reconcile.report import Report
from reconcile.settings import ReconcileSettings
from reconcile.topic import Described, describe
from xrides.ride import RideEnvelope, example_ride, parse_ride


def test_a_message_says_its_booking_day_and_version_even_when_it_breaks_the_contract() -> None:
    ride = parse_ride({**example_ride(), "from_date": "2026-05-04T23:30:00Z"})
    raw = RideEnvelope(ride, 1_700_000_000_000_000).encode()
    assert describe(raw) == Described(ride.booking_id, date(2026, 5, 4), 1_700_000_000_000_000)
    body = orjson.loads(raw)
    body["ride"]["from_lat"] = 99.0  # a dead letter: invalid, yet its booking and day are readable
    found = describe(orjson.dumps(body))
    assert (found.booking_id, found.day, found.version) == (
        ride.booking_id,
        date(2026, 5, 4),
        1_700_000_000_000_000,
    )
    assert describe(b"{not json", booking_id=7) == Described(7, None, None)
    assert describe(b'{"ride": {"from_date": "yesterday"}}') == Described(None, None, None)


def test_offsets_group_into_contiguous_runs() -> None:
    assert list(_runs([1, 2, 3, 7, 8, 10])) == [(1, 4), (7, 9), (10, 11)]
    assert list(_runs([])) == []


def _report() -> Report:
    report = Report(
        date(2026, 5, 1),
        date(2026, 5, 3),
        datetime(2026, 6, 1, tzinfo=UTC),
        date(2026, 4, 2),
        datetime(2026, 6, 1, tzinfo=UTC),
        limit=2,
    )
    first = report.row(date(2026, 5, 1))
    first.acknowledged, first.stored, first.indexed = 10, 9, 8
    first.diff("not_stored").add([42])
    first.diff("missing_from_elasticsearch").add([5, 3, 4])
    report.row(None).dead_lettered = 1
    return report


def test_report_counts_gaps_names_ids_and_caps_the_list() -> None:
    report = _report()
    assert report.gaps() == {"acknowledged_stored": 1, "stored_indexed": 3, "stored_archived": 0}
    body = report.as_dict()
    assert [d["day"] for d in body["days"]] == ["2026-05-01", None]
    assert body["days"][0]["differences"]["missing_from_elasticsearch"] == {"count": 3, "booking_ids": [3, 4]}
    table = report.table()
    assert "2026-05-01 missing_from_elasticsearch: 3: 3, 4 (+1 more)" in table
    assert "2026-05-01 not_stored: 1: 42" in table
    assert table.splitlines()[2].split() == [
        "day",
        "acknowledged",
        "stored",
        "dead",
        "pending",
        "indexed",
        "archived",
        "gap",
        "ack-stored",
        "gap",
        "stored-indexed",
        "gap",
        "stored-archived",
    ]


def test_windows_keep_the_newest_run_per_day_and_publish_bounded_series() -> None:
    settings = ReconcileSettings(reference_time="2026-05-03T12:00:00+00:00", recent_days=2, lookback_days=10)
    assert settings.cutoff_day() == date(2026, 3, 4)
    assert settings.recent_window() == (date(2026, 5, 2), date(2026, 5, 10))
    windows = Windows(settings)
    windows.merge(_report())
    newer = Report(
        date(2026, 5, 1), date(2026, 5, 1), settings.reference(), settings.cutoff_day(), settings.reference()
    )
    newer.row(date(2026, 5, 1)).stored = 3
    windows.merge(newer)
    assert windows.rows[date(2026, 5, 1)].stored == 3
    assert None not in windows.rows, "the unknown row comes from the latest run only"
    recent = _report()
    recent.first = recent.last = date(2026, 5, 3)
    recent.rows = {date(2026, 5, 3): recent.rows[date(2026, 5, 1)]}
    recent.rows[date(2026, 5, 3)].day = date(2026, 5, 3)
    windows.merge(recent)
    windows.publish()

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    assert sample("xrides_reconcile_rides", stage="stored", window="total") == 3 + 9
    assert sample("xrides_reconcile_rides", stage="stored", window="7d") == 9
    assert sample("xrides_reconcile_gap_rides", between="stored_indexed", window="7d") == 3
    assert sample("xrides_reconcile_gap_rides", between="acknowledged_stored", window="total") == 1
    assert set(metrics.WINDOWS) == {"7d", "total"}


PG_PASSWORDS = {"writer": "w", "reader": "r", "archiver": "a"}


def test_health_is_documented_open_and_checked_against_the_registry() -> None:
    spec = build_openapi()
    operation = spec["paths"]["/v1/health"]["get"]
    assert operation["security"] == []
    assert set(operation["responses"]) == {"200", "503"}
    body = {
        "status": "degraded",
        "checked_at": "2026-11-29T03:00:00.000+00:00",
        "dependencies": {
            name: {"status": "up", "critical": name in ("kafka", "postgres"), "latency_ms": 1.5}
            for name in ("kafka", "postgres", "elasticsearch", "s3")
        },
        "processes": {"persister": {"status": "unreachable", "critical": False, "detail": "TimeoutError"}},
    }
    jsonschema.validate(body, spec["components"]["schemas"]["Health"])
    assert peers(ApiSettings()) == {}
    # the launcher tells the local API every other process of the registry
    local = peers(ApiSettings(health_peers=stack_variables("k", PG_PASSWORDS)["XRIDES_HEALTH_PEERS"]))
    assert set(local) == {p.name for p in PROCESSES} - {"api"}
    assert local["reconcile"] == "http://127.0.0.1:9105/healthz"
    assert peers(
        ApiSettings(health_peers="persister=http://persister:9101/healthz, x=http://x:1/healthz")
    ) == {
        "persister": "http://persister:9101/healthz",
        "x": "http://x:1/healthz",
    }
