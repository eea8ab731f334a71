"""``GET /v1/health`` of an API process started from this tree against the real stack."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jsonschema
import pytest

from deploy.stack.platform import REGISTRY
from ingest_service.openapi import build_openapi

from conftest import PlatformProcess, free_port

pytestmark = pytest.mark.integration

StartApi = Callable[..., tuple[str, PlatformProcess]]
SCHEMA = build_openapi()["components"]["schemas"]["Health"]


async def health(base: str) -> tuple[int, dict[str, Any], str]:
    async with aiohttp.ClientSession() as session, session.get(base + "/v1/health") as response:
        text = await response.text()
        body: dict[str, Any] = await response.json()
        assert response.headers["Cache-Control"] == "no-store"
        return response.status, body, text


async def test_health_reports_every_dependency_without_a_key_and_without_secrets(
    start_api: StartApi, stack_env: dict[str, str]
) -> None:
    base, _ = start_api()
    for _ in range(30):  # the API connects to PostgreSQL in the background after it is ready
        status, body, text = await health(base)
        if body["dependencies"]["postgres"]["status"] == "up":
            break
        await asyncio.sleep(0.5)
    jsonschema.validate(body, SCHEMA)
    assert status == 200, body
    deps = body["dependencies"]
    assert {name: deps[name]["critical"] for name in deps} == {
        "kafka": True,
        "postgres": True,
        "elasticsearch": False,
        "s3": False,
    }
    assert all(d["status"] == "up" for d in deps.values()), deps
    # The registry's processes but the API itself; another suite may have stopped one for a while.
    assert set(body["processes"]) == {p.name for p in REGISTRY if p.module != "ingest_service"}
    everything_up = all(p["status"] == "up" for p in body["processes"].values())
    assert body["status"] == ("ok" if everything_up else "degraded")
    # Nothing that could help an attacker: no credentials, no addresses.
    pg_password = urlsplit(stack_env["XRIDES_PG_DSN"]).password or "unused"
    for secret in (
        stack_env["XRIDES_API_KEY"],
        stack_env["XRIDES_S3_SECRET_KEY"],
        pg_password,
        "://",
        "127.0.0.1",
    ):
        assert secret not in text


async def test_health_is_503_when_postgres_is_down_and_degraded_for_a_lost_process(
    start_api: StartApi,
) -> None:
    base, _ = start_api(pg_dsn=f"postgresql://xrides:xrides@127.0.0.1:{free_port()}/xrides")
    status, body, _ = await health(base)
    jsonschema.validate(body, SCHEMA)
    assert status == 503
    assert body["status"] == "down"
    assert body["dependencies"]["postgres"]["status"] == "down"
    assert body["dependencies"]["kafka"]["status"] == "up"

    base, _ = start_api(health_peers=f"ghost=http://127.0.0.1:{free_port()}/healthz", health_timeout_s="1")
    status, body, _ = await health(base)
    jsonschema.validate(body, SCHEMA)
    assert status == 200
    assert body["status"] == "degraded"
    assert body["processes"] == {
        "ghost": {"status": "unreachable", "critical": False, "detail": "ClientConnectorError"}
    }
