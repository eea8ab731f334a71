"""`make bench` in its quick profile against the live stack: every part runs and reports sense.

The figures themselves are machine-dependent and are not asserted against targets here (that is
what the benchmark is for); what is asserted is that each one was measured and is consistent:
every ride accounted for, every probe found, the headline equal to the sweep's best passing step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks.harness import report

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quick_run(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", "--quick", "--results", str(out),
         "--markdown", str(out / "BENCHMARKS.md"), "--plots", str(out)],
        cwd=REPO, env={**os.environ, **stack_env}, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return orjson.loads((out / "latest.json").read_bytes()), out


def test_latest_has_every_headline_number(quick_run: tuple[dict[str, Any], Path]) -> None:
    results, out = quick_run
    for key, _ in report.HEADLINE:
        assert key in results, key
    for key in ("kafka_producer_limit_rps", "postgres_copy_limit_rps", "elasticsearch_bulk_limit_dps"):
        assert results[key] > 1000, (key, results[key])
    assert results["batch_rides_per_s"] > 0
    assert results["e2e_postgres_p99_ms"] > 0
    assert results["e2e_elasticsearch_p99_ms"] > 0  # probes were found searchable
    assert len(results["git_commit"]) >= 40
    assert (out / "BENCHMARKS.md").read_text().startswith("# Benchmarks")
    assert (out / "bench-latency-throughput.png").stat().st_size > 10_000
    assert (out / "bench-burst-timeline.png").stat().st_size > 10_000


def test_scenarios_account_for_every_request(quick_run: tuple[dict[str, Any], Path]) -> None:
    results, _ = quick_run
    assert [s["name"] for s in results["scenarios"]] == ["steady", "burst-100x"]
    for scenario in results["scenarios"]:
        assert scenario["unexpected_answers"] == 0, scenario["statuses"]
        assert sum(scenario["statuses"].values()) == scenario["sent"]
        # the 1% invalid share gets its 422s, and nothing else is refused
        assert set(scenario["statuses"]) <= {"202", "422"}
        assert scenario["rides_accepted"] == scenario["statuses"]["202"]
        # every accepted request was found stored (retries share their original's request id)
        assert 0 < scenario["e2e_postgres_ms"]["requests"] <= scenario["rides_accepted"]
        probes = scenario["e2e_elasticsearch_ms"]
        assert probes["probes"] > 0 and probes["searchable"] == probes["probes"]
        assert probes["latency_ms"]["p50"] > 0
        assert scenario["catch_up_seconds_after_load"] is not None
        for name in ("api", "persister", "kafka", "postgres", "elasticsearch", "flink-job"):
            assert scenario["processes"][name]["rss_mb_max"] > 10, name
        assert len(scenario["timeline"]["ack"]) >= 8
    burst = results["scenarios"][1]["timeline"]["ack"]
    assert max(p["sent"] for p in burst) >= 5 * min(p["sent"] for p in burst)  # the burst is in the timeline


def test_sweep_headline_is_its_best_passing_step(quick_run: tuple[dict[str, Any], Path]) -> None:
    results, _ = quick_run
    steps = results["max_sustainable"]["steps"]
    passing = [s for s in steps if s["passed"]]
    assert results["max_sustainable_single_rps"] == (passing[-1]["offered_rps"] if passing else 0.0)
    for step in steps:
        assert step["passed"] == (step["unexpected_answers"] == 0 and step["ack_latency_ms"]["p99"] <= 25)
    batch = results["batch"]["steps"]
    assert batch and batch[0]["rides_per_s"] > 0
    assert batch[0]["statuses"].get("202", 0) > 0
    # the client library against the same batch API in the same run, every ride acknowledged
    client = results["batch"]["client"]
    assert client["accepted"] == client["rides"] > 0 and client["rides_per_s"] > 0
    assert results["client_rides_per_s"] == client["rides_per_s"]
    assert results["ratios"]["client_to_batch"] == round(
        client["rides_per_s"] / results["batch_rides_per_s"], 3
    )
