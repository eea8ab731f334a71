"""The API's contract in milliseconds: the real aiohttp application over in-memory edges.

``create_app`` takes its I/O edges (the Kafka producer, Kafka positions, the tracking store) ready
made; here they are in memory, so every answer, error shape, idempotent replay and the tracking
of a batch are checked without a broker or a database. The same handlers run against the real
stack in tests/integration/test_api.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest_service.app import create_app
from ingest_service.context import Edges
from ingest_service.settings import ApiSettings
from xrides.errors import BrokerUnavailable
from xrides.request_ids import Position
from xrides.ride import decode_envelope, example_ride
from xrides.tracking import ItemState

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


class MemoryLog:
    """Topics as lists; a message's position is (0, its index). ``down`` refuses every send."""

    def __init__(self) -> None:
        self.topics: dict[str, list[tuple[bytes | None, bytes]]] = {}
        self.down = False

    async def start(self, topics: Sequence[str]) -> None:
        for topic in topics:
            self.topics.setdefault(topic, [])

    def ready(self, topic: str) -> bool:
        return not self.down

    async def send_many(
        self, topic: str, messages: Sequence[tuple[bytes | None, bytes]], headers: Any = None
    ) -> list[Position | BaseException]:
        if self.down:
            return [BrokerUnavailable("no broker") for _ in messages]
        log = self.topics.setdefault(topic, [])
        out: list[Position | BaseException] = []
        for message in messages:
            log.append(message)
            out.append(Position(0, len(log) - 1))
        return out

    async def close(self) -> None:
        return None


class MemoryPositions:
    def __init__(self, log: MemoryLog, rides_topic: str, requests_topic: str) -> None:
        self.log = log
        self.rides_topic = rides_topic
        self.requests_topic = requests_topic

    async def exists(self, topic: str, position: Position) -> bool:
        return position.partition == 0 and 0 <= position.offset < len(self.log.topics.get(topic, []))

    async def ride_exists(self, position: Position) -> bool:
        return await self.exists(self.rides_topic, position)

    async def read(self, topic: str, position: Position) -> bytes | None:
        if not await self.exists(topic, position):
            return None
        return self.log.topics[topic][position.offset][1]

    async def batch_items(self, position: Position) -> list[tuple[int, Position]] | None:
        raw = await self.read(self.requests_topic, position)
        if raw is None:
            return None
        return [(i, Position(p, o)) for i, p, o in orjson.loads(raw)["items"]]

    async def close(self) -> None:
        return None


class MemoryTracking:
    def __init__(self) -> None:
        self.receipts: dict[Position, ItemState] = {}
        self.rides: dict[int, dict[str, Any]] = {}

    async def connect_forever(self) -> None:
        return None

    async def item_states(self, positions: Sequence[Position]) -> dict[Position, ItemState]:
        return {p: self.receipts.get(p, ItemState("pending")) for p in positions}

    async def latest_ride(self, booking_id: int) -> dict[str, Any] | None:
        return self.rides.get(booking_id)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient[Any, Any], MemoryLog, MemoryTracking]]:
    settings = ApiSettings(api_key=KEY)
    log, tracking = MemoryLog(), MemoryTracking()
    edges = Edges(log, MemoryPositions(log, settings.rides_topic, settings.requests_topic), tracking)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, edges)))
    await client.start_server()
    try:
        yield client, log, tracking
    finally:
        await client.close()


async def test_a_ride_is_answered_202_with_its_position_and_written_once(api: Any) -> None:
    client, log, _ = api
    response = await client.post("/v1/rides", json=example_ride(), headers=AUTH)
    assert response.status == 202
    body = await response.json()
    assert body == {
        "booking_id": 132512,
        "status": "Success",
        "request_id": "r0-0",
        "status_url": "/v1/requests/r0-0",
    }
    ((key, value),) = log.topics["rides"]
    assert key == b"132512"
    envelope = decode_envelope(value)
    assert envelope.ride.booking_id == 132512 and envelope.source == "api"


async def test_a_wrong_type_and_a_wrong_date_keep_the_prototypes_messages(api: Any) -> None:
    client, log, _ = api
    wrong_type = {**example_ride(), "vehicle_model_id": "28"}
    response = await client.post("/v1/rides", json=wrong_type, headers=AUTH)
    assert response.status == 422
    body = await response.json()
    assert body["status"] == "Failed"
    assert body["error_message"] == (
        "vehicle_model_id data type mismatch, vehicle_model_id expected to be <class 'int'>"
    )
    wrong_date = {**example_ride(), "booking_created": "1/1-2013 1:39:00"}
    response = await client.post("/v1/rides", json=wrong_date, headers=AUTH)
    body = await response.json()
    assert body["error_message"] == (
        "booking_created format mismatch, please send month/date/year hour:minute:seconds "
    )
    assert log.topics["rides"] == []


async def test_without_a_key_nothing_is_accepted(api: Any) -> None:
    client, log, _ = api
    response = await client.post("/v1/rides", json=example_ride())
    assert response.status == 401
    assert (await response.json())["error_code"] == "unauthorized"
    assert log.topics["rides"] == []


async def test_kafka_away_is_503_with_retry_after_and_no_ack(api: Any) -> None:
    client, log, _ = api
    log.down = True
    response = await client.post("/v1/rides", json=example_ride(), headers=AUTH)
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"
    body = await response.json()
    assert body["retriable"] is True and body["booking_id"] == 132512


async def test_a_retry_with_the_same_idempotency_key_writes_nothing_twice(api: Any) -> None:
    client, log, _ = api
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    first = await client.post("/v1/rides", json=example_ride(), headers=headers)
    again = await client.post("/v1/rides", json=example_ride(), headers=headers)
    assert first.status == again.status == 202
    assert await first.json() == await again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(log.topics["rides"]) == 1
    other = await client.post("/v1/rides", json={**example_ride(), "driver_id": 7}, headers=headers)
    assert other.status == 409
    assert len(log.topics["rides"]) == 1


async def test_a_batch_answers_per_item_and_is_tracked_by_its_manifest(api: Any) -> None:
    client, log, tracking = api
    rides = [
        example_ride(),
        {**example_ride(), "booking_id": 2, "from_lat": 91.0},
        {**example_ride(), "booking_id": 3},
    ]
    response = await client.post("/v1/rides/batch", json=rides, headers=AUTH)
    assert response.status == 207
    body = await response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [item["status"] for item in body["items"]] == ["Success", "Failed", "Success"]
    assert body["items"][1]["errors"][0]["code"] == "out_of_range"
    assert len(log.topics["rides"]) == 2
    tracking.receipts[Position(0, 0)] = ItemState("stored", 132512)
    status = await client.get(f"/v1/requests/{body['request_id']}", headers=AUTH)
    answer = await status.json()
    assert [i["state"] for i in answer["items"]] == ["stored", "accepted"]
    assert answer["state"] == "accepted"
    tracking.receipts[Position(0, 1)] = ItemState("failed", 3, reason="refused by PostgreSQL")
    answer = await (await client.get(f"/v1/requests/{body['request_id']}", headers=AUTH)).json()
    assert answer["state"] == "partially_failed"
    assert answer["items"][1]["reason"] == "refused by PostgreSQL"


async def test_unknown_request_ids_and_rides_are_404(api: Any) -> None:
    client, _, tracking = api
    assert (await client.get("/v1/requests/r0-5", headers=AUTH)).status == 404
    assert (await client.get("/v1/requests/nonsense", headers=AUTH)).status == 404
    assert (await client.get("/v1/rides/132512", headers=AUTH)).status == 404
    tracking.rides[132512] = {"booking_id": 132512}
    found = await client.get("/v1/rides/132512", headers=AUTH)
    assert (await found.json()) == {"booking_id": 132512, "state": "stored"}
