"""The query service as deployed (``python -m query_service``) on the real stores, and the ingest API's
``/v1/query`` forwarded to it.

Its rides are loaded into its own names (``qsvc_test.cab_rides``, ``qsvctest-rides-*``,
``s3://xrides-archive/qsvctest/rides/``) and deleted afterwards. Checked: ``--check``, answers equal
to the engine's on every backend, freshness in the answer, the cost checks refusing with 400 and a
reason on each engine, keys and scopes through the API's proxy, metrics, and a graceful stop that
lets a running query finish.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loadgen.synthetic import drop_all, load_all, make_rides
from query_dsl import QueryEngine, QuerySettings, parse_document, plan_query
from xrides.settings import load_settings

from conftest import REPO, PlatformProcess, free_port, wait_http

pytestmark = pytest.mark.integration

READER, INGESTER = "qsvc-reader-key-0123456789", "qsvc-ingest-key-0123456789"
KEYS = ",".join(
    f"{name}:{scope}:{hashlib.sha256(secret.encode()).hexdigest()}"
    for name, scope, secret in (("reader", "query", READER), ("ingester", "ingest", INGESTER))
)
NAMES = {
    "XRIDES_QUERY_PG_TABLE": "qsvc_test.cab_rides",
    "XRIDES_ES_RIDES_PREFIX": "qsvctest-rides-",
    "XRIDES_ARCHIVE_PREFIX": "qsvctest/rides",
}
QUERY = {
    "measures": ["count", "sum(car_cancellation)"],
    "dimensions": ["booking_channel"],
    "time_range": "last 7 days",
}


def _settings(stack_env: dict[str, str]) -> QuerySettings:
    return load_settings(QuerySettings, {**stack_env, **NAMES})


@pytest.fixture(scope="module")
def rides(stack_env: dict[str, str]) -> Iterator[datetime]:
    settings = _settings(stack_env)
    made = make_rides(5000, datetime.now(UTC), 20, seed=9)
    asyncio.run(load_all(settings, [made]))
    yield max(r.booking_created for r in made)
    asyncio.run(drop_all(settings))


@pytest.fixture
def start_service(
    stack_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., tuple[str, PlatformProcess]]]:
    started: list[PlatformProcess] = []

    def start(**overrides: str) -> tuple[str, PlatformProcess]:
        port = free_port()
        env = {
            **os.environ,
            **stack_env,
            **NAMES,
            "XRIDES_QUERY_PORT": str(port),
            "XRIDES_API_KEY_HASHES": KEYS,
        }
        env.update({f"XRIDES_{k.upper()}": v for k, v in overrides.items()})
        process = PlatformProcess("query_service", env, tmp_path / f"query-{port}.log")
        process.start()
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/healthz", 60, process.proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"the query service did not start: {exc}\n{process.log_tail()}")
        return base, process

    yield start
    for process in started:
        process.stop()


def _post(url: str, body: Any, key: str | None = READER) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def _engine_answer(stack_env: dict[str, str], doc: dict[str, Any], backend: str) -> list[Any]:
    async def run() -> list[Any]:
        settings = replace(_settings(stack_env), query_freshness=False)
        engine = QueryEngine(settings)
        try:
            query, params = parse_document(json.dumps(doc))
            now = datetime.now(UTC)
            return (await engine.run(plan_query(query, params, now), backend, now)).rows
        finally:
            await engine.close()

    return asyncio.run(run())


def test_the_service_answers_on_every_backend_with_its_freshness(
    rides: datetime, start_service: Callable[..., tuple[str, PlatformProcess]], stack_env: dict[str, str]
) -> None:
    base, _ = start_service()
    port = base.rsplit(":", 1)[1]
    check = subprocess.run(
        [sys.executable, "-m", "query_service", "--check"],
        env={**os.environ, "XRIDES_QUERY_PORT": port},
        cwd=REPO,
        check=False,
    )
    assert check.returncode == 0
    for backend in ("postgres", "elasticsearch", "archive"):
        status, body, _ = _post(f"{base}/v1/query?backend={backend}", QUERY)
        assert status == 200, body
        assert body["backend"] == backend
        assert body["rows"] == _engine_answer(stack_env, QUERY, backend)
        assert body["freshness"]["engine"] == backend
    status, body, _ = _post(f"{base}/v1/query?backend=postgres", QUERY)
    assert datetime.fromisoformat(body["freshness"]["newest_ride"]) == rides  # the newest booking held
    assert "lag_rides" in body["freshness"]
    status, body, _ = _post(f"{base}/v1/query/explain?backend=elasticsearch", QUERY)
    assert status == 200
    assert body["statements"][0]["mode"] == "composite"
    status, body, _ = _post(f"{base}/v1/query", QUERY, key=INGESTER)
    assert (status, body["error_code"]) == (403, "forbidden")
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'xrides_query_runs_total{backend="archive",outcome="ok"} 1.0' in text
    assert READER not in text


def test_the_cost_checks_refuse_with_400_and_the_reason(
    rides: datetime, start_service: Callable[..., tuple[str, PlatformProcess]]
) -> None:
    base, _ = start_service(query_pg_max_cost="1", query_es_max_groups="10", query_archive_max_bytes="1")
    status, body, _ = _post(f"{base}/v1/query?backend=postgres", QUERY)
    assert (status, body["error_code"]) == (400, "query_limit_exceeded")
    assert "postgres estimates this query at" in body["error_message"]
    assert "cost" in body["error_message"]
    by_user = {"measures": ["count"], "dimensions": ["user_id"], "time_range": "last 7 days", "limit": 5}
    status, body, _ = _post(f"{base}/v1/query?backend=elasticsearch", by_user)
    assert (status, body["error_code"]) == (400, "query_limit_exceeded")
    assert "groups" in body["error_message"]
    by_channel = {**QUERY, "dimensions": ["booking_channel"]}
    status, body, _ = _post(f"{base}/v1/query?backend=elasticsearch", by_channel)
    assert status == 200  # three groups are known without asking, and within 10
    status, body, _ = _post(f"{base}/v1/query?backend=archive", QUERY)
    assert (status, body["error_code"]) == (400, "query_limit_exceeded")
    assert "bytes" in body["error_message"]


def test_the_api_forwards_queries_to_the_service(
    rides: datetime,
    start_service: Callable[..., tuple[str, PlatformProcess]],
    start_api: Callable[..., tuple[str, Any]],
) -> None:
    service, _ = start_service()
    api, _ = start_api(query_url=service, api_key_hashes=KEYS)
    direct = _post(f"{service}/v1/query?backend=postgres", QUERY)[1]
    status, body, _ = _post(f"{api}/v1/query?backend=postgres", QUERY)
    assert status == 200, body
    assert body["rows"] == direct["rows"]
    assert body["columns"] == direct["columns"]
    status, body, _ = _post(f"{api}/v1/query/explain?backend=postgres", QUERY)
    assert status == 200
    assert "GROUP BY" in body["statements"][0]["sql"]
    status, body, _ = _post(f"{api}/v1/query", QUERY, key=INGESTER)
    assert status == 403
    status, body, _ = _post(f"{api}/v1/query", b"measures: [count", key=READER)
    assert status == 400
    bad = {
        "measures": ["count"],
        "filter": {"field": "from_areaid", "op": "eq", "value": 1},
        "time_range": "last 7 days",
    }
    status, body, _ = _post(f"{api}/v1/query", bad)
    assert (status, body["error_code"]) == (400, "unknown_name")
    assert "$.filter.field" in body["error_message"]


def test_a_stop_lets_the_running_query_finish(
    rides: datetime, start_service: Callable[..., tuple[str, PlatformProcess]]
) -> None:
    base, process = start_service()
    # a scan of the range's rides from Elasticsearch, then DuckDB: slow enough to be caught running
    doc = {"measures": ["count"], "dimensions": ["customer_type", "user_rides"], "time_range": "last 30 days"}
    answer: list[Any] = []
    worker = threading.Thread(
        target=lambda: answer.append(_post(f"{base}/v1/query?backend=elasticsearch", doc))
    )
    worker.start()
    running = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and worker.is_alive() and not running:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            running = json.loads(response.read())["queries_running"] > 0
    assert process.proc is not None
    process.proc.send_signal(signal.SIGTERM)
    worker.join(60)
    assert process.proc.wait(60) == 0
    status, body, _ = answer[0]
    assert status == 200, body
    assert body["rows"]
    assert "query service stopped" in process.log_tail()
    assert running, "the query finished before the stop: make it slower"
