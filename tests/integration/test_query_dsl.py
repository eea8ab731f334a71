"""The query DSL on the real stack: every documented example gives the same answer on PostgreSQL,
Elasticsearch and the archive, over the same synthetic rides; and the HTTP endpoints.

The rides (``loadgen.synthetic``) are loaded into a test table (``dsl_test.cab_rides``), test
indices (``dsltest-rides-*``, under the Flink job's index template) and test Parquet files
(``s3://xrides-archive/dsltest/rides/dt=*``), so nothing the platform writes is touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loadgen.synthetic import load_all, make_rides
from query_dsl import QueryEngine, QueryError, QuerySettings, parse_document, plan_query
from query_dsl.result import Result

from stack_env import stack_setting

pytestmark = pytest.mark.integration

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "docs" / "query-examples").glob("*.json"))
RIDES = 30_000
DAYS = 25
TEST_TABLE = "dsl_test.cab_rides"
TEST_PREFIX = "dsltest-rides-"
TEST_ARCHIVE = "dsltest/rides"


def _settings(stack_env: dict[str, str]) -> QuerySettings:
    return QuerySettings(
        pg_dsn=stack_env["XRIDES_PG_DSN"],
        es_url=stack_env["XRIDES_ES_URL"],
        es_rides_prefix=TEST_PREFIX,
        s3_endpoint=stack_env["XRIDES_S3_ENDPOINT"],
        s3_access_key=stack_env["XRIDES_S3_ACCESS_KEY"],
        s3_secret_key=stack_env["XRIDES_S3_SECRET_KEY"],
        s3_bucket=stack_env["XRIDES_S3_BUCKET"],
        archive_prefix=TEST_ARCHIVE,
        query_pg_table=TEST_TABLE,
    )


@pytest.fixture(scope="module")
def loaded(stack_env: dict[str, str]) -> tuple[QuerySettings, datetime]:
    settings = _settings(stack_env)
    now = datetime.now(UTC)
    asyncio.run(load_all(settings, [make_rides(RIDES, now, DAYS)]))
    return settings, now


def _run_everywhere(settings: QuerySettings, now: datetime, text: str) -> dict[str, Result]:
    async def run() -> dict[str, Result]:
        engine = QueryEngine(settings)
        try:
            query, params = parse_document(text)
            plan = plan_query(query, params, now, settings.limits)
            return {b: await engine.run(plan, b, now) for b in ("postgres", "elasticsearch", "archive")}
        finally:
            await engine.close()

    return asyncio.run(run())


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if a is None or b is None or isinstance(a, str | bool) or isinstance(b, str | bool):
        return bool(a == b)
    if isinstance(a, int) and isinstance(b, int) and tolerance == 0:
        return bool(a == b)
    return math.isclose(a, b, rel_tol=max(tolerance, 1e-9), abs_tol=1e-9)


def assert_same(reference: Result, other: Result) -> None:
    assert [c.name for c in other.columns] == [c.name for c in reference.columns]
    assert len(other.rows) == len(reference.rows), (other.backend, other.rows[:5], reference.rows[:5])
    for i, (want, got) in enumerate(zip(reference.rows, other.rows, strict=True)):
        for column, a, b in zip(other.columns, want, got, strict=True):
            assert _close(a, b, column.tolerance), (
                f"{other.backend} row {i} column {column.name}: {b!r} != {a!r} "
                f"(exact={column.exact}, tolerance={column.tolerance})"
            )


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_gives_the_same_answer_on_every_backend(
    loaded: tuple[QuerySettings, datetime], example: Path
) -> None:
    settings, now = loaded
    results = _run_everywhere(settings, now, example.read_text())
    reference = results["postgres"]
    assert reference.rows, f"{example.name} found no rides: the synthetic data does not cover it"
    assert all(c.exact for c in reference.columns)
    assert_same(reference, results["archive"])
    assert_same(reference, results["elasticsearch"])
    es_columns = {c.name: c for c in results["elasticsearch"].columns}
    for column in es_columns.values():
        if column.name.startswith(("p50_", "p95_", "count_distinct_")):
            assert not column.exact
            assert column.tolerance > 0


def test_examples_cover_what_the_issue_asks_for() -> None:
    names = " ".join(p.stem for p in EXAMPLES)
    for topic in ("per_hour_by_travel_type", "top_pickup_areas_by_cancellation_rate", "lead_time_percentiles",
                  "online_vs_mobile_share_by_week", "geohash", "this_week_vs_last_week"):  # fmt: skip
        assert topic in names
    assert len(EXAMPLES) >= 10


def test_auto_picks_elasticsearch_for_recent_ranges_and_postgres_for_old_ones(
    loaded: tuple[QuerySettings, datetime],
) -> None:
    settings, now = loaded

    async def run(text: str) -> Result:
        engine = QueryEngine(settings)
        try:
            query, params = parse_document(text)
            return await engine.run(plan_query(query, params, now), "auto", now)
        finally:
            await engine.close()

    recent = asyncio.run(run('{"measures": ["count"], "time_range": "last 7 days"}'))
    assert recent.backend == "elasticsearch"
    assert "auto" in recent.backend_reason
    old = asyncio.run(
        run('{"measures": ["count"], "time_range": {"from": "2025-01-01", "to": "2025-02-01"}}')
    )
    assert old.backend == "postgres"
    assert old.rows == [[0]]


def test_a_hostile_value_is_refused_before_any_backend(loaded: tuple[QuerySettings, datetime]) -> None:
    settings, now = loaded
    hostile = {
        "measures": ["count"],
        "filter": {
            "field": "booking_channel",
            "op": "eq",
            "value": "online'; DROP TABLE dsl_test.cab_rides; --",
        },
        "time_range": "last 7 days",
    }
    with pytest.raises(QueryError, match="booking_channel expects one of"):
        _run_everywhere(settings, now, json.dumps(hostile))
    # the table is still there and still answers
    results = _run_everywhere(settings, now, '{"measures": ["count"], "time_range": "last 30 days"}')
    assert results["postgres"].rows[0][0] > 0


# The HTTP API -------------------------------------------------------------------------------


def _post(url: str, body: bytes, key: str | None, content_type: str = "application/json") -> tuple[int, Any]:
    headers = {"Content-Type": content_type}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {"reader": "dsl-test-reader-key-0123456789", "ingester": "dsl-test-ingest-key-0123456789"}


def test_api_runs_and_explains_queries(
    loaded: tuple[QuerySettings, datetime],
    start_api: Callable[..., tuple[str, Any]],
    keys: dict[str, str],
) -> None:
    settings, now = loaded
    hashes = ",".join(
        f"{name}:{scope}:{hashlib.sha256(secret.encode()).hexdigest()}"
        for (name, secret), scope in zip(keys.items(), ("query", "ingest"), strict=True)
    )
    base, _ = start_api(
        es_rides_prefix=TEST_PREFIX,
        query_pg_table=TEST_TABLE,
        archive_prefix=TEST_ARCHIVE,
        api_key_hashes=hashes,
    )
    example = next(p for p in EXAMPLES if "top_pickup_areas" in p.stem).read_bytes()
    reference = _run_everywhere(settings, now, example.decode())["postgres"]

    for backend in ("postgres", "elasticsearch", "archive"):
        status, body = _post(f"{base}/v1/query?backend={backend}", example, keys["reader"])
        assert status == 200, body
        assert body["backend"] == backend
        assert body["rows"] == reference.rows
        assert [c["name"] for c in body["columns"]] == ["from_area_id", "count", "cancellation_rate"]
        assert set(body["range"]) == {"from", "to", "zone"}
        assert body["range"]["zone"] == "Asia/Kolkata"

    status, body = _post(f"{base}/v1/query?backend=auto", example, keys["reader"])
    assert status == 200
    assert body["backend"] == "elasticsearch"

    yaml_body = b"measures: [count]\ndimensions: [booking_channel]\ntime_range: last 7 days\n"
    status, body = _post(f"{base}/v1/query?backend=postgres", yaml_body, keys["reader"], "application/yaml")
    assert status == 200, body
    assert [r[0] for r in body["rows"]] == ["mobile_site", "offline", "online"]

    status, body = _post(f"{base}/v1/query/explain?backend=postgres", example, keys["reader"])
    assert status == 200, body
    statement = body["statements"][0]
    assert "HAVING" in statement["sql"]
    assert statement["params"][-1] == 50
    assert body["query"]["limit"] == 10
    status, body = _post(f"{base}/v1/query/explain?backend=elasticsearch", example, keys["reader"])
    assert status == 200
    assert "aggs" in body["statements"][0]["body"]


def test_api_refuses_bad_keys_and_bad_queries(
    loaded: tuple[QuerySettings, datetime],
    start_api: Callable[..., tuple[str, Any]],
    keys: dict[str, str],
) -> None:
    ingest_only = f"ingester:ingest:{hashlib.sha256(keys['ingester'].encode()).hexdigest()}"
    base, _ = start_api(query_pg_table=TEST_TABLE, api_key_hashes=ingest_only)
    good = b'{"measures": ["count"], "time_range": "last 7 days"}'

    status, body = _post(f"{base}/v1/query", good, None)
    assert status == 401
    status, body = _post(f"{base}/v1/query", good, keys["ingester"])
    assert status == 403
    assert body["error_code"] == "forbidden"
    status, body = _post(f"{base}/v1/query/explain", good, keys["ingester"])
    assert status == 403

    # the dev key (all scopes) from the stack's settings
    dev = base
    key = stack_setting("XRIDES_API_KEY")
    status, body = _post(f"{dev}/v1/query?backend=postgres", good, key)
    assert status == 200, body
    status, body = _post(f"{dev}/v1/query?backend=mysql", good, key)
    assert status == 400
    assert body["error_code"] == "invalid_query"
    status, body = _post(
        f"{dev}/v1/query?backend=postgres",
        b'{"measures": ["count"], "filter": {"field": "from_area_id; DROP TABLE cab_rides", "op": "eq", "value": 1},'
        b' "time_range": "last 7 days"}',
        key,
    )
    assert status == 400
    assert body["error_code"] == "unknown_name"
    assert "$.filter.field" in body["error_message"]
    status, body = _post(
        f"{dev}/v1/query?backend=postgres",
        b'{"measures": ["count"], "time_range": "last 3 months", "dimensions": ["minute(from_date)"]}',
        key,
    )
    assert status == 400
    assert body["error_code"] == "query_limit_exceeded"
    status, body = _post(f"{dev}/v1/query", b"measures: [count", key, "application/yaml")
    assert status == 400
    status, body = _post(f"{dev}/v1/query", good, key, "text/plain")
    assert status == 415
