"""The query service in milliseconds: its real aiohttp application over a scripted engine, and the API's
proxy in front of it.

What is checked here: keys and scopes as in the API, the one error shape with the right statuses
(400 / 401 / 403 / 415 / 429 + Retry-After / 503 + Retry-After / 500), the concurrency bound, metrics
without ids, settings, ``--check``, and that the API forwards ``/v1/query`` unchanged and no longer
runs queries itself. The engine's own behaviour is tested against the real stores in
tests/integration/test_query_*.py.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_api_handlers import MemoryLog, MemoryPositions, MemoryTracking

from ingest_service.app import create_app as create_api
from ingest_service.auth import hash_key
from ingest_service.context import Edges
from ingest_service.settings import ApiSettings
from query_dsl import QueryBackendUnavailable, QueryLimitExceeded, QuerySettings
from query_dsl.plan import Plan
from query_dsl.result import Column, Result
from query_dsl.timerange import ResolvedRange
from query_service import cli
from query_service.app import create_app
from query_service.settings import QueryServiceSettings
from xrides.settings import describe, load_settings
from xrides.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

REPO = Path(__file__).resolve().parents[2]
READER, INGESTER, SIGNER = "reader-key-0123456789", "ingest-key-0123456789", "signer-key-0123456789"
SECRET = "c2lnbmluZy1zZWNyZXQ"
KEYS = ",".join(
    [
        f"reader:query:{hash_key(READER)}",
        f"ingester:ingest:{hash_key(INGESTER)}",
        f"signer:query:{hash_key(SIGNER)}:secret={SECRET}:signing=required",
    ]
)
QUERY = b'{"measures": ["count"], "dimensions": ["booking_channel"], "time_range": "last 7 days"}'


class ScriptedEngine:
    """Answers what it is told: a result, an error, or a result after a pause (to fill the slots)."""

    def __init__(self, settings: QuerySettings) -> None:
        self.limits = settings.limits
        self.answer: BaseException | None = None
        self.pause_s = 0.0
        self.runs: list[tuple[Plan, str]] = []
        self.closed = False

    async def run(self, plan: Plan, backend: str = "auto", now: datetime | None = None) -> Result:
        self.runs.append((plan, backend))
        await asyncio.sleep(self.pause_s)
        if self.answer is not None:
            raise self.answer
        chosen = "postgres" if backend == "auto" else backend
        return Result(
            backend=chosen,
            range=ResolvedRange(plan.range.start, plan.range.end, plan.range.zone, "x"),
            columns=[Column("booking_channel", "string", True), Column("count", "integer", True)],
            rows=[["online", 3]],
            freshness={"engine": chosen, "lag_rides": 5},
        )

    def explain(self, plan: Plan, backend: str, now: datetime) -> dict[str, Any]:
        return {"backend": backend, "statements": []}

    async def close(self) -> None:
        self.closed = True


def _settings(**overrides: Any) -> QueryServiceSettings:
    return QueryServiceSettings(api_key_hashes=KEYS, **overrides)


@pytest.fixture
async def service() -> AsyncIterator[tuple[TestClient[Any, Any], ScriptedEngine]]:
    settings = _settings(query_max_concurrent=1, query_retry_after_s=3)
    engine = ScriptedEngine(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, engine)))
    await client.start_server()
    try:
        yield client, engine
    finally:
        await client.close()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


async def test_a_query_with_the_query_scope_is_answered(service: Any) -> None:
    client, engine = service
    response = await client.post("/v1/query?backend=postgres", data=QUERY, headers=_auth(READER))
    body = await response.json()
    assert response.status == 200, body
    assert body["rows"] == [["online", 3]]
    assert body["freshness"]["lag_rides"] == 5
    assert engine.runs[0][1] == "postgres"
    response = await client.post("/v1/query/explain?backend=archive", data=QUERY, headers=_auth(READER))
    assert (await response.json())["backend"] == "archive"


async def test_keys_and_scopes_are_the_apis(service: Any) -> None:
    client, engine = service
    response = await client.post("/v1/query", data=QUERY, headers={"Content-Type": "application/json"})
    assert response.status == 401
    response = await client.post("/v1/query", data=QUERY, headers=_auth(INGESTER))
    body = await response.json()
    assert (response.status, body["error_code"]) == (403, "forbidden")
    response = await client.post(
        "/v1/query", data=QUERY, headers={**_auth(READER), "Content-Type": "text/plain"}
    )
    assert response.status == 415
    assert engine.runs == []


async def test_a_key_that_must_sign_is_checked_and_a_replay_refused(service: Any) -> None:
    client, engine = service
    path = "/v1/query?backend=postgres"
    response = await client.post(path, data=QUERY, headers=_auth(SIGNER))
    assert response.status == 401
    stamp = str(int(time.time()))
    signed = {
        **_auth(SIGNER),
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: "v1=" + signature(SECRET.encode(), stamp, "POST", path, QUERY),
    }
    response = await client.post(path, data=QUERY, headers=signed)
    assert response.status == 200, await response.text()
    response = await client.post(path, data=QUERY, headers=signed)
    assert response.status == 401
    assert "already received" in (await response.json())["error_message"]
    assert len(engine.runs) == 1


async def test_bad_queries_are_400_with_the_path_of_the_mistake(service: Any) -> None:
    client, engine = service
    bad = b'{"measures": ["count"], "filter": {"field": "from_areaid", "op": "eq", "value": 1}, "time_range": "last 7 days"}'
    response = await client.post("/v1/query", data=bad, headers=_auth(READER))
    body = await response.json()
    assert (response.status, body["error_code"]) == (400, "unknown_name")
    assert "$.filter.field" in body["error_message"]
    assert "from_area_id" in body["error_message"]
    assert engine.runs == []


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        (
            QueryLimitExceeded("postgres estimates 9e9 cost", backend="postgres"),
            400,
            "query_limit_exceeded",
            None,
        ),
        (
            QueryBackendUnavailable("PostgreSQL is not reachable", retry_after_s=4),
            503,
            "query_backend_unavailable",
            "4",
        ),
        (RuntimeError("a bug"), 500, "internal_error", None),
    ],
)
async def test_engine_errors_map_to_one_shape(
    service: Any, error: BaseException, status: int, code: str, retry_after: str | None
) -> None:
    client, engine = service
    engine.answer = error
    response = await client.post("/v1/query", data=QUERY, headers=_auth(READER))
    body = await response.json()
    assert (response.status, body["status"], body["error_code"]) == (status, "Failed", code)
    assert response.headers.get("Retry-After") == retry_after
    assert "a bug" not in body["error_message"]  # an internal error says nothing of its cause


async def test_past_the_concurrency_limit_a_query_is_429_with_retry_after(service: Any) -> None:
    client, engine = service
    engine.pause_s = 0.3
    first = asyncio.ensure_future(client.post("/v1/query", data=QUERY, headers=_auth(READER)))
    await asyncio.sleep(0.1)
    second = await client.post("/v1/query", data=QUERY, headers=_auth(READER))
    body = await second.json()
    assert (second.status, body["error_code"]) == (429, "query_busy")
    assert second.headers["Retry-After"] == "3"
    assert (await first).status == 200
    health = await (await client.get("/healthz")).json()
    assert health == {"status": "ok", "queries_running": 0, "max_concurrent": 1}
    third = await client.post("/v1/query", data=QUERY, headers=_auth(READER))
    assert third.status == 200  # the slot is free again


async def test_metrics_name_backends_and_outcomes_never_keys_or_queries(service: Any) -> None:
    client, engine = service
    await client.post("/v1/query?backend=elasticsearch", data=QUERY, headers=_auth(READER))
    engine.answer = QueryLimitExceeded("too many groups")
    await client.post("/v1/query?backend=postgres", data=QUERY, headers=_auth(READER))
    text = await (await client.get("/metrics")).text()
    assert 'xrides_query_runs_total{backend="elasticsearch",outcome="ok"}' in text
    assert 'xrides_query_runs_total{backend="postgres",outcome="refused"}' in text
    assert 'xrides_query_engine_lag_rides{backend="elasticsearch"} 5.0' in text
    assert "xrides_query_max_concurrent 1.0" in text
    for secret in ("reader", READER, "booking_channel", "last 7 days"):
        assert secret not in text


async def test_stopping_closes_the_engine() -> None:
    settings = _settings()
    engine = ScriptedEngine(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, engine)))
    await client.start_server()
    await client.close()
    assert engine.closed


def test_settings_are_the_query_settings_plus_the_services_own() -> None:
    settings = load_settings(
        QueryServiceSettings,
        {
            "XRIDES_QUERY_PORT": "9999",
            "XRIDES_PG_REPLICA_DSN": "postgresql://reader:pw@replica/xrides",
            "XRIDES_QUERY_DUCKDB_MEMORY_MB": "256",
            "XRIDES_LOCAL_ZONE": "Europe/Berlin",
            "XRIDES_API_KEY": "dev-secret",
        },
    )
    assert isinstance(settings, QuerySettings)
    assert (settings.query_port, settings.query_duckdb_memory_mb, settings.local_zone) == (
        9999,
        256,
        "Europe/Berlin",
    )
    assert settings.query_dsn == "postgresql://reader:pw@replica/xrides"  # the replica when there is one
    assert QueryServiceSettings(pg_dsn="postgresql://primary/x").query_dsn == "postgresql://primary/x"
    shown = describe(settings)
    assert shown["api_key"] == "***"
    assert "pw" not in str(shown)
    assert settings.shutdown_timeout_s > settings.query_timeout_s


def test_check_fails_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("XRIDES_QUERY_PORT", str(port))
    assert cli.main(["--check"]) == 1


def test_the_api_does_not_run_queries_any_more() -> None:
    """The API may read the catalog (its OpenAPI schema) but never plans, compiles or runs a query."""
    for path in sorted((REPO / "ingest_service").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("query_dsl"):
                assert node.module == "query_dsl.catalog", f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("query_dsl") for a in node.names), path.name


# The API's proxy ----------------------------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in query service that records what reached it and answers 429 to ``backend=busy``."""
    seen: list[dict[str, Any]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append({"path": request.path_qs, "headers": dict(request.headers), "body": await request.read()})
        if request.query.get("backend") == "busy":
            return web.json_response({"error_code": "query_busy"}, status=429, headers={"Retry-After": "7"})
        return web.json_response({"rows": [[1]], "via": "query-service"})

    app = web.Application()
    app.router.add_post("/v1/query", answer)
    app.router.add_post("/v1/query/explain", answer)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), seen
    finally:
        await server.close()


async def _api(query_url: str) -> TestClient[Any, Any]:
    settings = ApiSettings(api_key_hashes=KEYS, query_url=query_url, query_proxy_timeout_s=5)
    log, tracking = MemoryLog(), MemoryTracking()
    positions = MemoryPositions(log, settings.rides_topic, settings.requests_topic, settings.refused_topic)
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_api(settings, Edges(log, positions, tracking)))
    )
    await client.start_server()
    return client


async def test_the_api_forwards_queries_unchanged(upstream: Any) -> None:
    url, seen = upstream
    api = await _api(url)
    try:
        stamp = str(int(time.time()))
        path = "/v1/query?backend=postgres"
        headers = {
            **_auth(SIGNER),
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: "v1=" + signature(SECRET.encode(), stamp, "POST", path, QUERY),
        }
        response = await api.post(path, data=QUERY, headers=headers)
        assert response.status == 200
        assert await response.json() == {"rows": [[1]], "via": "query-service"}
        forwarded = seen[0]
        assert forwarded["path"] == path
        assert forwarded["body"] == QUERY
        for name in ("Authorization", TIMESTAMP_HEADER, SIGNATURE_HEADER, "Content-Type"):
            assert forwarded["headers"][name] == headers[name]
        busy = await api.post("/v1/query?backend=busy", data=QUERY, headers=_auth(READER))
        assert (busy.status, busy.headers["Retry-After"]) == (429, "7")
        explained = await api.post("/v1/query/explain", data=QUERY, headers=_auth(READER))
        assert explained.status == 200
        assert seen[-1]["path"] == "/v1/query/explain"
        refused = await api.post("/v1/query", data=QUERY, headers=_auth(INGESTER))
        assert refused.status == 403
        assert len(seen) == 3  # a key without the scope never reaches the query service
    finally:
        await api.close()


async def test_the_api_answers_503_when_the_query_service_is_away() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = await _api(f"http://127.0.0.1:{port}")
    try:
        response = await api.post("/v1/query", data=QUERY, headers=_auth(READER))
        body = await response.json()
        assert (response.status, body["error_code"]) == (503, "query_service_unavailable")
        assert response.headers["Retry-After"] == "2"
    finally:
        await api.close()


def test_the_replica_is_used_for_queries() -> None:
    settings = dataclasses.replace(QuerySettings(), pg_replica_dsn="postgresql://replica/x")
    assert settings.query_dsn == "postgresql://replica/x"
