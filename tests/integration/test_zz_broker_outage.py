"""Kafka stopped under the API: 503 with Retry-After in bounded time, then recovery without a restart.

Named ``zz`` so it runs after the other integration modules: it stops the shared broker.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import orjson
import pytest

from xrides.ride import example_ride

from conftest import REPO, PlatformProcess

pytestmark = pytest.mark.integration


def stack(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "deploy.stack", *args], cwd=REPO, check=True, timeout=300)


async def test_broker_down_gives_503_then_recovers(
    start_api: Callable[..., tuple[str, PlatformProcess]], stack_env: dict[str, str]
) -> None:
    base, api = start_api(delivery_timeout_ms="3000")
    headers = {"Authorization": f"Bearer {stack_env['XRIDES_API_KEY']}", "Content-Type": "application/json"}
    ride = {**example_ride(), "booking_id": int(time.time() * 1000)}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(base + "/v1/rides", data=orjson.dumps(ride)) as response:
            assert response.status == 202

        stack("down", "--only", "kafka")
        try:
            started = time.monotonic()
            async with session.post(base + "/v1/rides", data=orjson.dumps(ride)) as response:
                body = await response.json()
                elapsed = time.monotonic() - started
                assert response.status == 503, body
                assert int(response.headers["Retry-After"]) >= 1
                assert body["status"] == "Failed"
                assert body["retriable"] is True
            assert elapsed < 3 + 1 + 2, f"503 took {elapsed:.1f}s; the bound is the delivery timeout"
            async with session.get(base + "/readyz") as response:
                assert response.status == 503
            async with session.post(base + "/v1/rides/batch", data=orjson.dumps([ride, ride])) as response:
                assert response.status == 503
        finally:
            stack("up", "--only", "kafka")

        deadline = time.monotonic() + 90
        status = 0
        while time.monotonic() < deadline:
            async with session.post(base + "/v1/rides", data=orjson.dumps(ride)) as response:
                status = response.status
                if status == 202:
                    break
                assert status == 503
            await asyncio.sleep(1)
        assert status == 202, "the API did not recover after the broker came back"
        assert api.proc is not None
        assert api.proc.poll() is None, "the API process restarted or died"


async def test_postgres_down_leaves_ingest_up_and_tracking_answers_503(
    start_api: Callable[..., tuple[str, PlatformProcess]], stack_env: dict[str, str]
) -> None:
    base, _ = start_api()
    headers = {"Authorization": f"Bearer {stack_env['XRIDES_API_KEY']}", "Content-Type": "application/json"}
    ride = {**example_ride(), "booking_id": int(time.time() * 1000) + 7}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(base + "/v1/rides", data=orjson.dumps(ride)) as response:
            request_id = (await response.json())["request_id"]
        stack("down", "--only", "postgres")
        try:
            # The hot path needs only Kafka: rides are still acknowledged.
            async with session.post(base + "/v1/rides", data=orjson.dumps(ride)) as response:
                assert response.status == 202
            async with session.get(f"{base}/v1/requests/{request_id}") as response:
                assert response.status == 503
                assert int(response.headers["Retry-After"]) >= 1
        finally:
            stack("up", "--only", "postgres")
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and status != 200:
            async with session.get(f"{base}/v1/requests/{request_id}") as response:
                status = response.status
            await asyncio.sleep(0.5)
        assert status == 200, "tracking did not recover after PostgreSQL came back"
