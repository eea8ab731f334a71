"""The stack's Prometheus scrapes the Flink job's own metrics (the Prometheus reporter on the mini
cluster, job ``flink``): records in and out, Kafka source lag and checkpoint duration."""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.integration

SERIES = (
    "flink_taskmanager_job_task_operator_numRecordsIn",
    "flink_taskmanager_job_task_operator_numRecordsOut",
    "flink_taskmanager_job_task_operator_KafkaSourceReader_KafkaConsumer_records_lag_max",
    "flink_jobmanager_job_lastCheckpointDuration",
    "flink_jobmanager_job_numberOfCompletedCheckpoints",
)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        result: list[dict[str, Any]] = orjson.loads(response.read())["data"]["result"]
    return result


def test_prometheus_has_the_flink_jobs_series(stack_env: dict[str, str]) -> None:
    base = stack_env["XRIDES_PROMETHEUS_URL"]
    deadline = time.monotonic() + 90  # a freshly started job is scraped within a few intervals
    missing: list[str] = list(SERIES)
    while missing and time.monotonic() < deadline:
        missing = [name for name in SERIES if not query(base, f'{name}{{job="flink"}}')]
        if missing:
            time.sleep(3)
    assert not missing, f"no series for {missing} from the flink target"
    completed = query(base, 'max(flink_jobmanager_job_numberOfCompletedCheckpoints{job="flink"})')
    assert float(completed[0]["value"][1]) >= 1  # checkpoints are being taken
