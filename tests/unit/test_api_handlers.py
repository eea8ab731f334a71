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
from ingest_service.auth import hash_key
from ingest_service.context import Edges
from ingest_service.positions import BatchItems
from ingest_service.settings import ApiSettings
from xrides.errors import BrokerUnavailable
from xrides.quarantine import Refusal, decode_refusal
from xrides.request_ids import Position
from xrides.ride import decode_envelope, example_ride
from xrides.tracking import ItemState, RefusalState

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
STRICT_KEY = "strict-key"


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
    def __init__(self, log: MemoryLog, rides_topic: str, requests_topic: str, refused_topic: str) -> None:
        self.log = log
        self.rides_topic = rides_topic
        self.requests_topic = requests_topic
        self.refused_topic = refused_topic

    async def exists(self, topic: str, position: Position) -> bool:
        return position.partition == 0 and 0 <= position.offset < len(self.log.topics.get(topic, []))

    async def ride_exists(self, position: Position) -> bool:
        return await self.exists(self.rides_topic, position)

    async def read(self, topic: str, position: Position) -> bytes | None:
        if not await self.exists(topic, position):
            return None
        return self.log.topics[topic][position.offset][1]

    async def batch_items(self, position: Position) -> BatchItems | None:
        raw = await self.read(self.requests_topic, position)
        if raw is None:
            return None
        manifest = orjson.loads(raw)
        return BatchItems(
            [(i, Position(p, o)) for i, p, o in manifest["items"]],
            [(i, Position(p, o)) for i, p, o in manifest["refused"]],
        )

    async def refusal(self, position: Position) -> Refusal | None:
        raw = await self.read(self.refused_topic, position)
        return None if raw is None else decode_refusal(raw)

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

    async def refusals(self, positions: Sequence[Position]) -> dict[Position, RefusalState]:
        return {}  # the persister has not recorded them yet

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient[Any, Any], MemoryLog, MemoryTracking]]:
    strict_key = f"strict:ingest+query:{hash_key(STRICT_KEY)}:fields=strict"
    settings = ApiSettings(api_key=KEY, api_key_hashes=strict_key)
    log, tracking = MemoryLog(), MemoryTracking()
    positions = MemoryPositions(log, settings.rides_topic, settings.requests_topic, settings.refused_topic)
    edges = Edges(log, positions, tracking)
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
    assert body["request_id"] == "q0-0"  # kept in the quarantine, trackable
    wrong_date = {**example_ride(), "booking_created": "1/1-2013 1:39:00"}
    response = await client.post("/v1/rides", json=wrong_date, headers=AUTH)
    body = await response.json()
    assert body["error_message"] == (
        "booking_created format mismatch, please send month/date/year hour:minute:seconds "
    )
    assert log.topics["rides"] == []
    ((key, value), _) = log.topics["rides.refused"]
    refusal = decode_refusal(value)
    assert key == b"132512" and refusal.booking_id == 132512 and refusal.key_id == "dev"
    assert orjson.loads(refusal.body) == wrong_type
    assert [e["field"] for e in refusal.errors] == ["vehicle_model_id"]


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
    assert (body["items"][1]["request_id"], body["items"][1]["quarantined"]) == ("q0-0", True)
    assert len(log.topics["rides"]) == 2
    tracking.receipts[Position(0, 0)] = ItemState("stored", 132512)
    status = await client.get(f"/v1/requests/{body['request_id']}", headers=AUTH)
    answer = await status.json()
    assert [i["state"] for i in answer["items"]] == ["stored", "refused", "accepted"]
    assert [i["index"] for i in answer["items"]] == [0, 1, 2]
    assert answer["state"] == "accepted"
    tracking.receipts[Position(0, 1)] = ItemState("failed", 3, reason="refused by PostgreSQL")
    answer = await (await client.get(f"/v1/requests/{body['request_id']}", headers=AUTH)).json()
    assert answer["state"] == "partially_failed"
    assert answer["items"][2]["reason"] == "refused by PostgreSQL"


async def test_unknown_request_ids_and_rides_are_404(api: Any) -> None:
    client, _, tracking = api
    assert (await client.get("/v1/requests/r0-5", headers=AUTH)).status == 404
    assert (await client.get("/v1/requests/nonsense", headers=AUTH)).status == 404
    assert (await client.get("/v1/rides/132512", headers=AUTH)).status == 404
    tracking.rides[132512] = {"booking_id": 132512}
    found = await client.get("/v1/rides/132512", headers=AUTH)
    assert (await found.json()) == {"booking_id": 132512, "state": "stored"}


async def test_a_refused_ride_is_tracked_as_refused_with_its_errors(api: Any) -> None:
    client, _, _ = api
    response = await client.post("/v1/rides", json={**example_ride(), "from_lat": 99.0}, headers=AUTH)
    request_id = (await response.json())["request_id"]
    answer = await (await client.get(f"/v1/requests/{request_id}", headers=AUTH)).json()
    assert answer["state"] == "refused"
    (item,) = answer["items"]
    assert item["booking_id"] == 132512 and item["errors"][0]["code"] == "out_of_range"


async def test_unknown_fields_are_kept_and_warned_about_unless_the_key_is_strict(api: Any) -> None:
    client, log, _ = api
    response = await client.post("/v1/rides", json={**example_ride(), "fare_inr": 640}, headers=AUTH)
    assert response.status == 202
    body = await response.json()
    assert [(w["field"], w["code"]) for w in body["warnings"]] == [("fare_inr", "unknown_field_kept")]
    ((_, value),) = log.topics["rides"]
    assert decode_envelope(value).ride.extras == {"fare_inr": 640}
    strict = {"Authorization": f"Bearer {STRICT_KEY}"}
    refused = await client.post("/v1/rides", json={**example_ride(), "fare_inr": 640}, headers=strict)
    assert refused.status == 422
    assert (await refused.json())["errors"][0]["code"] == "unknown_field"


async def test_real_shapes_are_accepted(api: Any) -> None:
    client, log, _ = api
    bare_day = {**example_ride(), "to_date": "1/2/2013"}
    by_city = {**example_ride(), "booking_id": 7, "from_area_id": None, "from_city_id": 15,
               "from_lat": None, "from_long": None}  # fmt: skip
    for ride in (bare_day, by_city):
        assert (await client.post("/v1/rides", json=ride, headers=AUTH)).status == 202
    rides = [decode_envelope(v).ride for _, v in log.topics["rides"]]
    assert rides[0].to_date is None and str(rides[0].to_date_day) == "2013-01-02"
    assert (rides[1].from_area_id, rides[1].from_city_id) == (None, 15)
