"""The ingest API against the real Kafka broker (and PostgreSQL for tracking)."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson
import pytest

from xrides.kafka import KafkaConfig, TopicReader
from xrides.request_ids import parse_request_id
from xrides.ride import decode_envelope, example_ride, parse_ride
from xrides.topics import RIDES

from conftest import PlatformProcess

pytestmark = pytest.mark.integration

StartApi = Callable[..., tuple[str, PlatformProcess]]


def new_ride(**changes: Any) -> dict[str, Any]:
    # Random ids in a high range keep runs and parallel suites from colliding.
    return {**example_ride(), "booking_id": random.randint(10**12, 2 * 10**12), **changes}


def auth(stack_env: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack_env['XRIDES_API_KEY']}"}


def read_message(bootstrap: str, topic: str, partition: int, offset: int) -> bytes:
    reader = TopicReader(KafkaConfig(bootstrap, "api-it"), timeout_s=10.0)
    try:
        record = reader.read_one(topic, partition, offset)
    finally:
        reader.close()
    if record is None:
        raise AssertionError(f"no message at {topic}/{partition}@{offset}")
    return record.value


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    reader = TopicReader(KafkaConfig(bootstrap, "api-it"))
    try:
        return {partition: marks.high for partition, marks in reader.watermarks(topic).items()}
    finally:
        reader.close()


async def post(
    session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    ) as response:
        return response.status, await response.json(), response.headers


async def test_prototype_examples(start_api: StartApi, stack_env: dict[str, str]) -> None:
    base, _ = start_api()
    async with aiohttp.ClientSession(headers=auth(stack_env)) as session:
        ride = new_ride()
        for path in ("/xride_data", "/v1/rides"):
            status, body, _ = await post(session, base + path, ride)
            assert status == 202, body
            assert body["booking_id"] == ride["booking_id"]
            assert body["status"] == "Success"
            assert body["status_url"] == f"/v1/requests/{body['request_id']}"
            position = parse_request_id(body["request_id"]).position
            raw = read_message(
                stack_env["XRIDES_KAFKA_BOOTSTRAP"], RIDES.name, position.partition, position.offset
            )
            assert decode_envelope(raw).ride == parse_ride(ride)

        status, body, _ = await post(session, base + "/xride_data", {**ride, "vehicle_model_id": "28"})
        assert status == 422
        assert body["status"] == "Failed"
        assert body["error_message"] == (
            "vehicle_model_id data type mismatch, vehicle_model_id expected to be <class 'int'>"
        )
        assert body["booking_id"] == ride["booking_id"]
        assert body["errors"][0]["received"] == "'28'"

        status, body, _ = await post(
            session, base + "/xride_data", {**ride, "booking_created": "1/1-2013 1:39:00"}
        )
        assert status == 422
        request_id = body.pop("request_id")  # the refused ride is kept in the quarantine
        assert request_id.startswith("q") and body.pop("status_url").endswith(request_id)
        assert body == {
            "status": "Failed",
            "error_message": "booking_created format mismatch, please send month/date/year hour:minute:seconds ",
            "error_code": "validation_failed",
            "booking_id": ride["booking_id"],
            "errors": [
                {
                    "field": "booking_created",
                    "code": "format_mismatch",
                    "expected": "month/day/year hour:minute[:second] or ISO 8601",
                    "received": "'1/1-2013 1:39:00'",
                    "message": "booking_created format mismatch, please send month/date/year hour:minute:seconds ",
                }
            ],
        }


async def test_bad_requests_get_clear_errors(start_api: StartApi, stack_env: dict[str, str]) -> None:
    base, _ = start_api(max_body_bytes="2048")
    url = base + "/v1/rides"
    async with aiohttp.ClientSession(headers=auth(stack_env)) as session:
        status, body, _ = await post(session, url, b'{"booking_id": 1,')
        assert (status, body["error_code"]) == (400, "malformed_body")
        status, body, _ = await post(session, url, b"\xff\xfe not utf-8")
        assert status == 400
        status, body, _ = await post(session, url, b"[" * 5000 + b"]" * 5000)
        assert status in (400, 413)
        status, body, _ = await post(session, url, b"x" * 4096)
        assert (status, body["error_code"]) == (413, "payload_too_large")
        async with session.post(url, data=b"{}", headers={"Content-Type": "text/plain"}) as response:
            assert response.status == 415
        status, body, _ = await post(session, url, {**new_ride(), "from_lat": 99.0})
        assert (status, body["errors"][0]["field"]) == (422, "from_lat")
    async with aiohttp.ClientSession() as anonymous:
        status, body, _ = await post(anonymous, url, new_ride())
        assert (status, body["error_code"]) == (401, "unauthorized")
        status, body, _ = await post(anonymous, url, new_ride(), {"Authorization": "Bearer nope"})
        assert status == 401


async def test_batch_accepts_valid_items_and_reports_the_rest(
    start_api: StartApi, stack_env: dict[str, str]
) -> None:
    base, _ = start_api()
    good = [new_ride() for _ in range(3)]
    bad = {**new_ride(), "user_id": "x", "from_date": "soon"}
    async with aiohttp.ClientSession(headers=auth(stack_env)) as session:
        status, body, _ = await post(session, base + "/v1/rides/batch", [good[0], bad, good[1], 7, good[2]])
        assert status == 207, body
        assert (body["accepted"], body["rejected"]) == (3, 2)
        assert [item["status"] for item in body["items"]] == [
            "Success",
            "Failed",
            "Success",
            "Failed",
            "Success",
        ]
        assert {e["field"] for e in body["items"][1]["errors"]} == {"user_id", "from_date"}
        assert body["items"][3]["errors"][0]["field"] == "$"
        for index, ride in ((0, good[0]), (2, good[1]), (4, good[2])):
            item = body["items"][index]
            assert item["booking_id"] == ride["booking_id"]
            position = parse_request_id(item["request_id"]).position
            raw = read_message(
                stack_env["XRIDES_KAFKA_BOOTSTRAP"], RIDES.name, position.partition, position.offset
            )
            assert decode_envelope(raw).ride.booking_id == ride["booking_id"]

        async with session.get(base + body["status_url"]) as response:
            tracked = await response.json()
            assert response.status == 200, tracked
            # every item: the accepted ones, and the refused ones kept in the quarantine
            assert [i["index"] for i in tracked["items"]] == [0, 1, 2, 3, 4]
            assert [tracked["items"][n]["state"] for n in (1, 3)] == ["refused", "refused"]
            assert tracked["items"][1]["request_id"] == body["items"][1]["request_id"]
            assert {i["state"] for i in tracked["items"]} <= {"accepted", "stored", "refused"}

        ndjson = b"\n".join(orjson.dumps(r) for r in (new_ride(), new_ride())) + b"\n{oops\n"
        async with session.post(
            base + "/v1/rides/batch", data=ndjson, headers={"Content-Type": "application/x-ndjson"}
        ) as response:
            body = await response.json()
            assert response.status == 207
            assert [i["status"] for i in body["items"]] == ["Success", "Success", "Failed"]

        status, body, _ = await post(session, base + "/v1/rides/batch", [bad])
        assert (status, body["accepted"]) == (422, 0)
        # nothing accepted, yet trackable: the batch of one refused ride has its id
        async with session.get(base + body["status_url"]) as response:
            tracked = await response.json()
            assert (tracked["state"], tracked["items"][0]["state"]) == ("refused", "refused")
        status, body, _ = await post(session, base + "/v1/rides/batch", {"not": "a list"})
        assert status == 400


async def test_batch_size_limit(start_api: StartApi, stack_env: dict[str, str]) -> None:
    base, _ = start_api(max_batch_items="5")
    async with aiohttp.ClientSession(headers=auth(stack_env)) as session:
        status, body, _ = await post(session, base + "/v1/rides/batch", [new_ride() for _ in range(6)])
        assert (status, body["error_code"]) == (413, "payload_too_large")


async def test_idempotency_key_returns_the_first_answer_and_writes_once(
    start_api: StartApi, stack_env: dict[str, str]
) -> None:
    base, _ = start_api()
    bootstrap = stack_env["XRIDES_KAFKA_BOOTSTRAP"]
    ride = new_ride()
    headers = {"Idempotency-Key": f"test-{ride['booking_id']}"}
    async with aiohttp.ClientSession(headers=auth(stack_env)) as session:
        status, first, _ = await post(session, base + "/v1/rides", ride, headers)
        assert status == 202
        before = end_offsets(bootstrap, RIDES.name)
        replies = await asyncio.gather(*(post(session, base + "/v1/rides", ride, headers) for _ in range(5)))
        for status, body, response_headers in replies:
            assert status == 202
            assert body == first
            assert response_headers["Idempotent-Replayed"] == "true"
        assert end_offsets(bootstrap, RIDES.name) == before
        status, body, _ = await post(session, base + "/v1/rides", {**ride, "driver_id": 9}, headers)
        assert (status, body["error_code"]) == (409, "idempotency_conflict")


async def test_rate_limit_answers_429_with_headers(start_api: StartApi, stack_env: dict[str, str]) -> None:
    base, _ = start_api(rate_limit_per_s="1", rate_limit_burst="3")
    async with aiohttp.ClientSession(headers=auth(stack_env)) as session:
        codes = []
        for _ in range(4):
            status, body, headers = await post(session, base + "/v1/rides", new_ride())
            codes.append(status)
        assert codes == [202, 202, 202, 429]
        assert int(headers["Retry-After"]) >= 1
        assert headers["RateLimit-Remaining"] == "0"
        assert body["error_code"] == "rate_limited"


async def test_tracking_unknown_ids_are_404(start_api: StartApi, stack_env: dict[str, str]) -> None:
    base, _ = start_api()
    async with aiohttp.ClientSession(headers=auth(stack_env)) as session:
        for rid in ("r0-999999999999", "b0-999999999999", "r99-1", "nonsense"):
            async with session.get(f"{base}/v1/requests/{rid}") as response:
                assert response.status == 404, rid
                assert (await response.json())["status"] == "Failed"


async def test_docs_and_openapi_are_served(start_api: StartApi) -> None:
    base, _ = start_api()
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/openapi.json") as response:
            spec = await response.json()
            assert spec["openapi"] == "3.1.0"
        async with session.get(base + "/docs") as response:
            assert "swagger-ui-bundle.js" in await response.text()
        async with session.get(base + "/docs/static/swagger-ui-bundle.js") as response:
            assert response.status == 200
            assert len(await response.read()) > 100_000
        async with session.get(base + "/metrics") as response:
            assert "xrides_api_requests_total" in await response.text()


async def test_graceful_stop_finishes_in_flight_requests(
    start_api: StartApi, stack_env: dict[str, str]
) -> None:
    base, process = start_api()
    async with aiohttp.ClientSession(headers=auth(stack_env)) as session:
        batch = [new_ride() for _ in range(500)]
        task = asyncio.create_task(post(session, base + "/v1/rides/batch", batch))
        await asyncio.sleep(0.05)
        assert process.proc is not None
        process.proc.send_signal(signal.SIGTERM)
        status, body, _ = await task
        assert status == 202
        assert body["accepted"] == 500
    # One SIGTERM is a clean stop (exit 0). (A second one during shutdown would cut it short.)
    assert process.proc is not None
    assert await asyncio.to_thread(process.proc.wait, 30) == 0
