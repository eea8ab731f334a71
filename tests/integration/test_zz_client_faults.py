"""The client under faults (benchmarks/client_faults.py at a smaller N than the script's 100,000):
the API killed and restarted twice and Kafka once while rides are sent; every ride is stored exactly
once and the client's outcomes agree with PostgreSQL ride by ride."""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.client_faults import make_rides, run_with_faults


def test_every_ride_is_stored_once_through_api_and_kafka_restarts(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    first = int(time.time()) % 100_000 * 10**6 + 8 * 10**13
    run = run_with_faults({**os.environ, **stack_env}, make_rides(20_000, first), tmp_path / "spool.db")
    assert [f["part"] for f in run.faults] == ["api", "kafka", "api"], run
    assert run.outcomes == {"stored": run.rides}, run
    assert (run.stored_once, run.missing, run.duplicated_rows, run.outcome_disagrees) == (
        run.rides,
        0,
        0,
        0,
    ), run
