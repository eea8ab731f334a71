"""Hostile and odd input the contract does not spell out: each gets a clear 4xx, and the service
stays healthy for everyone else while it happens."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from loadgen.rides import RideGenerator

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def ride(**changes: Any) -> dict[str, Any]:
    return {
        **RideGenerator(seed=int(time.time() * 1000) % 10**6, first_booking_id=int(time.time() * 1e6)).ride(),
        **changes,
    }


async def test_odd_json_gets_clear_errors(start_api: Any, stack_env: dict[str, str]) -> None:
    base, _ = start_api()
    headers = {"Authorization": f"Bearer {stack_env['XRIDES_API_KEY']}", "Content-Type": "application/json"}
    good = orjson.dumps(ride())
    cases = {
        "duplicate key": good[:-1] + b',"from_lat":12.9}',
        "duplicate key, batch": b"[" + good + b"," + good[:-1] + b',"booking_id":1}]',
        "number too large for a double": good[:-1] + b',"extra":1e400}',
        "integer beyond 64 bits": good.replace(
            b'"booking_id":', b'"booking_id":1000000000000000000000000000000,"x":', 1
        ),
        "NaN literal": good.replace(b'"from_lat":', b'"from_lat":NaN,"x":', 1),
        "lone surrogate": good[:-1] + b',"note":"\\ud800"}',
        "array of scalars": b"[1, 2, 3]",
        "a bare string": b'"ride"',
        "null": b"null",
    }
    async with aiohttp.ClientSession(headers=headers) as http:
        for name, body in cases.items():
            path = "/v1/rides/batch" if "batch" in name or name == "array of scalars" else "/v1/rides"
            async with http.post(base + path, data=body) as response:
                answer = await response.json()
                assert 400 <= response.status < 500, (name, response.status, answer)
                if path.endswith("batch") and response.status == 422:  # every item refused, each with why
                    assert answer["accepted"] == 0, answer
                    assert all(i["status"] == "Failed" and i["error_message"] for i in answer["items"]), (
                        answer
                    )
                else:
                    assert answer["status"] == "Failed" and answer["error_message"], (name, answer)
                if name.startswith("duplicate key") and path == "/v1/rides":
                    assert (response.status, answer["error_code"]) == (400, "malformed_body"), answer
                    assert "duplicate key 'from_lat'" in answer["error_message"]
        async with http.post(base + "/v1/rides", data=good) as response:  # still healthy
            assert response.status == 202


async def test_slow_clients_do_not_starve_others(start_api: Any, stack_env: dict[str, str]) -> None:
    base, _ = start_api(read_timeout_s="2")
    host, port = base.removeprefix("http://").split(":")
    # 200 connections that send half a request and then stall (slowloris)
    stalled = []
    head = (
        "POST /v1/rides HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 900\r\n"
        f"Authorization: Bearer {stack_env['XRIDES_API_KEY']}\r\n\r\n{{"
    ).encode()
    for _ in range(200):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head)
        await writer.drain()
        stalled.append((reader, writer))
    headers = {"Authorization": f"Bearer {stack_env['XRIDES_API_KEY']}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        started = time.monotonic()
        async with http.post(base + "/v1/rides", json=ride()) as response:
            assert response.status == 202
        assert time.monotonic() - started < 2
    # the stalled bodies are cut off after the read timeout with a 408, and the sockets closed
    answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 15) for r, _ in stalled))
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
    for _, writer in stalled:
        writer.close()
