"""The API's building blocks that need no network: keys, limits, idempotency, bodies, OpenAPI."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import jsonschema
import orjson
import pytest

from ingest_service.auth import KeyRing, hash_key, parse_key_hashes
from ingest_service.body import split_ndjson
from ingest_service.idempotency import IdempotencyStore, StoredResponse
from ingest_service.limits import InFlight, TokenBucket
from ingest_service.openapi import build_openapi
from xrides.errors import (
    Forbidden,
    IdempotencyConflict,
    MalformedBody,
    NotFound,
    Overloaded,
    RateLimited,
    Unauthorized,
)
from xrides.logs import JsonFormatter
from xrides.request_ids import Position, batch_request_id, parse_request_id, ride_request_id
from xrides.ride import example_ride, ride_json_schema


def test_keys_are_checked_by_hash_and_scope() -> None:
    ring = KeyRing(
        parse_key_hashes(f"ingester:ingest:{hash_key('s3cret')},analyst:query:{hash_key('other')}")
    )
    assert ring.authenticate("Bearer s3cret", ("ingest",)).key_id == "ingester"
    with pytest.raises(Unauthorized):
        ring.authenticate(None, ("ingest",))
    with pytest.raises(Unauthorized):
        ring.authenticate("Bearer wrong", ("ingest",))
    with pytest.raises(Unauthorized):
        ring.authenticate("Basic s3cret", ("ingest",))
    with pytest.raises(Forbidden):
        ring.authenticate("Bearer other", ("ingest",))
    assert ring.authenticate("Bearer other", ("ingest", "query")).key_id == "analyst"


def test_dev_key_has_every_scope() -> None:
    ring = KeyRing.from_settings("", "dev-secret")
    key = ring.authenticate("Bearer dev-secret", ("admin",))
    assert key.sha256 == hashlib.sha256(b"dev-secret").digest()


def test_token_bucket_refuses_past_the_burst_and_says_when_to_retry() -> None:
    bucket = TokenBucket(rate=10, burst=20)
    assert bucket.take(15) == pytest.approx(5, abs=0.1)
    with pytest.raises(RateLimited) as info:
        bucket.take(10)
    assert info.value.retry_after_s >= 1
    with pytest.raises(RateLimited):
        bucket.take(21)  # more than the burst can ever hold


def test_in_flight_bound() -> None:
    gate = InFlight(2)
    gate.enter()
    gate.enter()
    with pytest.raises(Overloaded):
        gate.enter()
    gate.leave()
    gate.enter()


async def test_idempotency_replays_the_first_answer() -> None:
    store = IdempotencyStore(ttl_s=60, max_entries=10)
    assert store.begin("c", "k1", b"body") is None
    pending = store.begin("c", "k1", b"body")
    assert pending is not None and not pending.done()
    store.finish("c", "k1", StoredResponse(202, b"{}"))
    assert (await asyncio.wait_for(pending, 1)).status == 202
    with pytest.raises(IdempotencyConflict):
        store.begin("c", "k1", b"other body")
    assert store.begin("other-client", "k1", b"body") is None  # keys are per client


async def test_idempotency_releases_the_key_after_a_retriable_failure() -> None:
    store = IdempotencyStore(ttl_s=60, max_entries=10)
    assert store.begin("c", "k", b"x") is None
    store.finish("c", "k", None)
    assert store.begin("c", "k", b"x") is None


async def test_idempotency_window_is_bounded() -> None:
    store = IdempotencyStore(ttl_s=60, max_entries=2)
    for key in ("a", "b", "c"):
        assert store.begin("c", key, b"x") is None
        store.finish("c", key, StoredResponse(202, b"{}"))
    assert store.begin("c", "d", b"x") is None  # evicts the oldest
    assert store.begin("c", "a", b"x") is None  # "a" was forgotten: it runs again


def test_ndjson_bad_lines_become_item_errors() -> None:
    items = split_ndjson(b'{"a": 1}\n\nnot json\n{"b": 2}\n')
    assert items[0] == {"a": 1}
    assert isinstance(items[1], MalformedBody)
    assert "line 3" in items[1].message
    assert items[2] == {"b": 2}


def test_request_ids_round_trip_and_reject_garbage() -> None:
    assert parse_request_id(ride_request_id(3, 1042)).position == Position(3, 1042)
    assert parse_request_id(batch_request_id(0, 7)).kind == "b"
    assert parse_request_id("q2-9").kind == "q"
    for bad in ("", "r3", "x1-2", "r-1-2", "r1-2; drop table", "r1-" + "9" * 30):
        with pytest.raises(NotFound):
            parse_request_id(bad)


def test_openapi_ride_schema_agrees_with_the_parser() -> None:
    spec = build_openapi()
    assert spec["openapi"].startswith("3.1")
    assert spec["components"]["schemas"]["Ride"] == ride_json_schema()
    validator = jsonschema.Draft202012Validator(ride_json_schema())
    validator.validate(example_ride())
    assert not validator.is_valid({**example_ride(), "vehicle_model_id": "28"})
    assert validator.is_valid({**example_ride(), "fare_inr": 640})  # kept, like the parser keeps it
    assert validator.is_valid({**example_ride(), "from_area_id": None, "from_city_id": 15})
    assert not validator.is_valid({**example_ride(), "from_area_id": None})  # neither area nor city
    assert validator.is_valid({**example_ride(), "to_date": "1/2/2013"})
    for path in ("/v1/rides", "/v1/rides/batch", "/xride_data", "/v1/requests/{request_id}"):
        assert path in spec["paths"]


def test_json_logs_survive_odd_extras() -> None:
    record = logging.makeLogRecord(
        {"msg": "partitions assigned", "kafka.offsets": {0: 12, 1: 7}, "when": object()}
    )
    doc = orjson.loads(JsonFormatter("test").format(record))
    assert doc["kafka.offsets"] == {"0": 12, "1": 7}
    assert doc["service.name"] == "test"
    assert doc["message"] == "partitions assigned"


def test_openapi_query_schema_accepts_every_documented_example() -> None:
    import json  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import jsonschema  # noqa: PLC0415

    spec = build_openapi()
    assert {"/v1/query", "/v1/query/explain"} <= set(spec["paths"])
    schema = spec["components"]["schemas"]["Query"]
    examples = sorted((Path(__file__).resolve().parents[2] / "docs" / "query-examples").glob("*.json"))
    assert len(examples) >= 10
    for path in examples:
        jsonschema.validate(json.loads(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"measures": ["count"]}, schema)  # no time range
