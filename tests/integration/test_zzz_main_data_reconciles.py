"""The last test of ``make test``: the reconciler over the platform's own data finds no gap.

Every test that damages data does it in its own database, topic and index prefix; one that reached
into the main data (a benchmark's cleanup once deleted rides other tests had posted) shows up here.
``tests/integration/conftest.py`` orders this test after every other one of the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SETTLE_S = 180.0  # rides posted by the last tests may still be on their way to Elasticsearch


def reconcile(stack_env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, **stack_env, "XRIDES_LOG_LEVEL": "WARNING"}
    result = subprocess.run(
        [sys.executable, "-m", "reconcile", "run", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    return result.returncode, json.loads(result.stdout)


def test_the_reconciler_finds_no_gap_in_the_main_data(stack_env: dict[str, str]) -> None:
    deadline = time.monotonic() + SETTLE_S
    while True:
        code, report = reconcile(stack_env)
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(10)
    assert code == 0, json.dumps(report.get("gaps", report), indent=1)[:4000]
    assert not any(report["gaps"].values())
