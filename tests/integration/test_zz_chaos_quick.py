"""The short fault suite (`make chaos` runs the whole one): SIGKILL the persister, the API, then
the Kafka broker, under steady load; afterwards every acknowledged ride is in PostgreSQL and Elasticsearch exactly
once at its latest acknowledged version, no request hung, and tracking tells the truth.

Named ``zz`` so it runs after the tests that share the platform processes it kills.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.mark.timeout(1200)
def test_quick_fault_suite_loses_and_duplicates_nothing(stack_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.chaos", "--quick", "--out", str(out), "--doc", str(tmp_path / "none.md")],
        cwd=REPO, env={**os.environ, **stack_env}, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert out.exists(), done.stdout[-2000:] + done.stderr[-3000:]
    results = orjson.loads(out.read_bytes())
    by_name = {s["name"]: s for s in results["scenarios"]}
    assert sorted(by_name) == ["kill-api", "kill-kafka", "kill-persister"]
    for scenario in results["scenarios"]:
        name = scenario["name"]
        assert scenario["acknowledged"] > 0, name
        assert scenario["lost"] == 0, (name, scenario["lost_examples"])
        assert scenario["duplicated"] == 0, name
        assert scenario["wrong_version"] == 0, name
        assert scenario["hung"] == 0, (name, scenario["statuses"])
        assert scenario["acknowledged_without_receipt"] == 0, name
        assert scenario["stored"] == scenario["bookings_acknowledged"], name
        es = scenario["elasticsearch"]
        assert (es["missing"], es["duplicated"], es["wrong_version"]) == (0, 0, 0), (name, es)
        assert scenario["tracking"]["wrong"] == 0, (name, scenario["tracking"])
        assert scenario["time_to_recover_s"] is not None, name
        assert scenario["crashed"] == [], name  # e.g. a consumer that died while the broker was away
    # killing the API refuses requests visibly (connection errors), it never acknowledges them
    api = by_name["kill-api"]
    assert api["refused"] > 0, api["statuses"]
    assert api["sent"] == api["acknowledged"] + api["refused"] + api["invalid_refused"]
    # while the broker is down the API answers 503; once it is back the same API process acknowledges
    # again (a wedged idempotent producer is replaced), nobody restarts it
    kafka = by_name["kill-kafka"]
    assert kafka["statuses"].get("503", 0) > 0, kafka["statuses"]
    assert kafka["acknowledged_after_restart"] > 0, kafka["statuses"]
    assert done.returncode == 0, done.stdout[-2000:]
