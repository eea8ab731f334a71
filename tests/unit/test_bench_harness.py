"""The benchmark harness's own arithmetic: schedules, traffic mix, /proc figures, the report."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import report
from benchmarks.harness.procstat import ProcessFigures, Sampler, process_tree_usage, summarise
from deploy.stack.processes import write_pid_file
from loadgen.openloop import latency_summary, parse_segments, percentile, send_offsets
from loadgen.rides import DAILY_CURVE, RideGenerator, TrafficMix, daily_schedule, traffic
from xrides.ride import parse_ride
from xrides.ride.model import RideValidationError


def test_send_offsets_follow_each_segments_rate() -> None:
    offsets = send_offsets([(2, 5), (1, 20)])
    assert len(offsets) == 10 + 20
    assert offsets[:3] == pytest.approx([0.0, 0.2, 0.4])
    assert offsets[10] == pytest.approx(2.0)
    assert offsets[11] - offsets[10] == pytest.approx(0.05)
    assert all(b > a for a, b in itertools.pairwise(offsets))


def test_parse_segments() -> None:
    assert parse_segments("60:3.3,300:33") == [(60.0, 3.3), (300.0, 33.0)]


def test_daily_schedule_keeps_the_mean_and_peaks_in_the_evening() -> None:
    schedule = daily_schedule(240, 100)
    assert len(schedule) == 24
    assert sum(s * r for s, r in schedule) / 240 == pytest.approx(100)
    rates = [r for _, r in schedule]
    assert rates.index(max(rates)) == DAILY_CURVE.index(max(DAILY_CURVE)) == 18
    assert min(rates) < 0.1 * max(rates) * 2


def test_traffic_mix_proportions_and_validity() -> None:
    requests = traffic(RideGenerator(seed=5), 20_000, TrafficMix(updates=0.05, retries=0.02, invalid=0.03))
    kinds = {k: sum(r.kind == k for r in requests) for k in ("new", "update", "retry", "invalid")}
    assert 0.04 < kinds["update"] / 20_000 < 0.06
    assert 0.015 < kinds["retry"] / 20_000 < 0.025
    assert 0.025 < kinds["invalid"] / 20_000 < 0.035
    for request in requests:  # what the generator calls valid, the ride model accepts, and only that
        if request.valid:
            parse_ride(request.ride)
        else:
            with pytest.raises(RideValidationError):
                parse_ride(request.ride)
    updates = [r.ride for r in requests if r.kind == "update"]
    assert all(u["car_cancellation"] == 1 for u in updates)
    new_ids = {r.ride["booking_id"] for r in requests if r.kind == "new"}
    assert {u["booking_id"] for u in updates} <= new_ids


def test_percentiles() -> None:
    values = [i / 1000 for i in range(1, 1001)]  # 1..1000 ms
    assert percentile(values, 50) == 0.5
    assert latency_summary(values)["p99"] == 990.0
    assert latency_summary(values)["max"] == 1000.0


def test_process_tree_usage_counts_children(tmp_path: Path) -> None:
    write_pid_file(tmp_path / "me.pid", os.getpid())
    burner = os.fork()
    if burner == 0:  # a child that burns CPU must be charged to its parent's tree
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            pass
        os._exit(0)
    try:
        before = process_tree_usage({"me": os.getpid()})["me"][0]
        time.sleep(0.8)
        after = process_tree_usage({"me": os.getpid()})["me"][0]
    finally:
        os.waitpid(burner, 0)
    assert after - before > 0.3


def test_sampler_reads_pid_files(tmp_path: Path) -> None:
    write_pid_file(tmp_path / "me.pid", os.getpid())
    (tmp_path / "gone.pid").write_text("999999999 0\n")
    sampler = Sampler(tmp_path, interval=0.1)
    sampler.start()
    time.sleep(0.35)
    figures = sampler.stop()
    assert set(figures) == {"me"}
    assert figures["me"].rss_mb_max > 1


def test_summarise_mean_and_peak_cpu() -> None:
    samples = [
        (0.0, {"p": (10.0, 100 * 2**20)}),
        (1.0, {"p": (10.5, 120 * 2**20)}),
        (2.0, {"p": (12.0, 110 * 2**20)}),
    ]
    assert summarise(samples)["p"] == ProcessFigures(
        cpu_percent_mean=100.0, cpu_percent_max=150.0, rss_mb_max=120.0
    )


def _results() -> dict[str, Any]:
    scenario = {
        "name": "burst-100x",
        "description": "d",
        "offered_rps": 333.3,
        "rides_accepted": 99_000,
        "unexpected_answers": 0,
        "ack_latency_ms": {"p50": 3.0, "p95": 6.0, "p99": 9.0, "p99.9": 20.0, "max": 30.0},
        "e2e_postgres_ms": {"p50": 50.0, "p99": 140.0},
        "e2e_elasticsearch_ms": {"latency_ms": {"p50": 800.0, "p99": 1900.0}},
        "consumer_lag_peak": {"persister": 10, "flink-job": 5000, "es-indexer": 30},
        "catch_up_seconds_after_load": 12.5,
        "processes": {"api": {"cpu_percent_mean": 20.0, "cpu_percent_max": 40.0, "rss_mb_max": 120.0}},
        "timeline": {
            "ack": [{"t": 0, "sent": 3, "p50_ms": 3, "p99_ms": 9}],
            "lag": [{"t": 0.5, "persister": 1}],
        },
    }
    results = {
        "started_at_utc": "2026-11-29T06:00:00Z",
        "git_commit": "abc",
        "scenarios": [scenario],
        "max_sustainable": {
            "criterion": "c",
            "max_sustainable_rps": 1500.0,
            "p99_ms_at_max": 21.0,
            "steps": [
                {
                    "offered_rps": 1500.0,
                    "achieved_rps": 1499.0,
                    "ack_latency_ms": scenario["ack_latency_ms"],
                    "e2e_postgres_ms": {"p99": 100.0},
                    "unexpected_answers": 0,
                    "cpu_percent": {"api": 70.0},
                }
            ],
        },
        "max_sustainable_ack_path": {
            "criterion": "c",
            "max_sustainable_rps": 750.0,
            "p99_ms_at_max": 8.0,
            "steps": [],
        },
        "max_sustainable_durable_path": {
            "criterion": "c",
            "max_sustainable_rps": 2000.0,
            "p99_ms_at_max": 60.0,
            "stored_p99_ms_at_max": 210.0,
            "steps": [],
        },
        "batch": {
            "criterion": "c",
            "batch_rides_per_s": 15_000,
            "steps": [],
            "client": {
                "rides": 200_000,
                "batch_size": 1000,
                "rides_per_s": 12_000,
                "wall_rides_per_s": 11_000,
                "retries": 0,
                "accepted": 200_000,
            },
        },
        "limits": {
            "kafka": {"records_per_s": 90_000},
            "postgres": {"rows_per_s": 50_000},
            "elasticsearch": {"docs_per_s": 15_000},
        },
    }
    results.update(report.headline(results, "burst-100x"))
    return results


def test_headline_has_every_promised_key_and_the_ratios() -> None:
    results = _results()
    for key, _ in report.HEADLINE:
        assert results[key] is not None, key
    assert results["e2e_postgres_p99_ms"] == 140.0
    assert results["stored_p99_ms_durable_path"] == 210.0
    assert results["e2e_elasticsearch_p99_ms"] == 1900.0
    assert results["ratios"]["single_to_kafka_limit"] == pytest.approx(1500 / 90_000, abs=1e-3)
    assert results["ratios"]["batch_to_kafka_limit"] == pytest.approx(15_000 / 90_000, abs=1e-3)
    assert results["client_rides_per_s"] == 12_000
    assert results["ratios"]["client_to_batch"] == 0.8


def test_write_markdown_and_plots(tmp_path: Path) -> None:
    results = _results()
    path = report.write(results, tmp_path)
    assert path.name == "20261129T060000Z.json"
    assert (tmp_path / "latest.json").read_bytes() == path.read_bytes()
    text = report.markdown(results)
    assert "| Max sustainable single-ride POST rate (rides/s) | 1,500.0 |" in text
    assert "| burst-100x | 333.3 | 99,000 | 0 | 3.0 / 9.0 / 20.0 |" in text
    written = report.plots(results, tmp_path, "burst-100x")
    assert [p.name for p in written] == ["bench-latency-throughput.png", "bench-burst-timeline.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
