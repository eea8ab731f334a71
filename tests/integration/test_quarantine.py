"""Refused rides on the real stack: kept, tracked as refused, in the quarantine table and in
``failed-rides-*``, and replayed after a contract change, exactly once.

The replay test plays a contract change the way it happens: rides refused by contract 1 (a bare
drop-off date, a pickup city without a pickup area) sit in the quarantine as the contract-1 API
left them, and ``python -m persister quarantine replay`` under contract 2 stores them. A second
replay stores nothing more.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from elasticsearch import AsyncElasticsearch

from xrides.kafka import DeliveryProducer, KafkaConfig, OutRecord
from xrides.quarantine import Refusal
from xrides.request_ids import refused_request_id
from xrides.ride import example_ride
from xrides.topics import REFUSED

REPO = Path(__file__).resolve().parents[2]


def _call(env: dict[str, str], method: str, path: str, body: object | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        env["XRIDES_API_URL"] + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {env['XRIDES_API_KEY']}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def _wait_for(pool: asyncpg.Pool, sql: str, *args: object, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await pool.fetchval(sql, *args)
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def test_a_refused_ride_is_quarantined_tracked_and_searchable(stack_env: dict[str, str]) -> None:
    booking = int(time.time() * 1000) % 10**9 + 3 * 10**13
    bad = {**example_ride(), "booking_id": booking, "vehicle_model_id": "28", "to_lat": 91.5}
    status, body = _call(stack_env, "POST", "/v1/rides", bad)
    assert status == 422
    request_id = body["request_id"]
    assert request_id.startswith("q") and body["status_url"].endswith(request_id)
    status, tracked = _call(stack_env, "GET", f"/v1/requests/{request_id}")
    assert (status, tracked["state"]) == (200, "refused")
    assert {e["field"] for e in tracked["items"][0]["errors"]} == {"vehicle_model_id", "to_lat"}

    partition, offset = (int(x) for x in request_id[1:].split("-"))
    pool = await asyncpg.create_pool(stack_env["XRIDES_PG_DSN"], min_size=1, max_size=2)
    try:
        row = await _wait_for(
            pool,
            "SELECT body FROM quarantine WHERE kafka_partition = $1 AND kafka_offset = $2",
            partition,
            offset,
        )
        assert orjson.loads(row) == bad
    finally:
        await pool.close()
    es = AsyncElasticsearch(stack_env["XRIDES_ES_URL"])
    try:
        for _ in range(60):
            await es.indices.refresh(index="failed-rides-*", allow_no_indices=True)
            found = await es.search(index="failed-rides-*", query={"ids": {"values": [request_id]}},
                                    allow_no_indices=True)  # fmt: skip
            if found["hits"]["hits"]:
                break
            await asyncio.sleep(1)
        (hit,) = found["hits"]["hits"]
        assert hit["_source"]["booking_id"] == booking
        assert set(hit["_source"]["error_fields"]) == {"vehicle_model_id", "to_lat"}
    finally:
        await es.close()


def _refused_by_contract_1(booking: int) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
    """Bodies contract 1 refused and contract 2 accepts, and one both refuse."""
    bare_day = {**example_ride(), "booking_id": booking, "to_date": "1/2/2013"}
    by_city = {**example_ride(), "booking_id": booking + 1, "from_area_id": None, "from_city_id": 15,
               "from_lat": None, "from_long": None}  # fmt: skip
    still_bad = {**example_ride(), "booking_id": booking + 2, "user_id": "x"}
    return [
        (bare_day, [{"field": "to_date", "code": "format_mismatch"}]),
        (by_city, [{"field": "from_area_id", "code": "null"}]),
        (still_bad, [{"field": "user_id", "code": "type_mismatch"}]),
    ]


def _replay(env: dict[str, str], since: datetime, until: datetime) -> dict[str, Any]:
    run_env = {**os.environ, **env, "XRIDES_PG_DSN": env["XRIDES_PG_WRITER_DSN"]}  # the persister's role
    done = subprocess.run(
        [sys.executable, "-m", "persister", "quarantine", "replay", "--since", since.isoformat(),
         "--until", until.isoformat()],
        cwd=REPO, env=run_env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])  # log lines come first
    return report


async def test_a_replay_after_a_contract_change_stores_what_now_validates_once(
    stack_env: dict[str, str],
) -> None:
    booking = int(time.time() * 1000) % 10**9 + 4 * 10**13
    since = datetime.now(UTC)
    refused_at = int(time.time() * 1_000_000) + 1000
    producer = DeliveryProducer(KafkaConfig(stack_env["XRIDES_KAFKA_BOOTSTRAP"], "quarantine-it"))
    try:
        records = [
            OutRecord(REFUSED.name, Refusal(refused_at, orjson.dumps(body), errors, body["booking_id"], "dev", 1).encode(),
                      str(body["booking_id"]).encode())
            for body, errors in _refused_by_contract_1(booking)
        ]  # fmt: skip
        positions = producer.send_all(records)
    finally:
        producer.close()
    ids = [refused_request_id(p.partition, p.offset) for p in positions]
    pool = await asyncpg.create_pool(stack_env["XRIDES_PG_DSN"], min_size=1, max_size=2)
    try:
        count = "SELECT count(*) = 3 FROM quarantine WHERE booking_id = ANY($1::bigint[])"
        assert await _wait_for(pool, count, [booking, booking + 1, booking + 2])
        until = datetime.now(UTC) + timedelta(seconds=1)
        report = _replay(stack_env, since, until)
        assert (report["replayed"], report["still_refused"]) == (2, 1)
        assert set(report["request_ids"]) == set(ids[:2])
        stored = "SELECT count(*) = 2 FROM cab_rides WHERE booking_id = ANY($1::bigint[])"
        assert await _wait_for(pool, stored, [booking, booking + 1, booking + 2])
        again = _replay(stack_env, since, until)
        assert (again["replayed"], again["considered"]) == (0, 1)
        await asyncio.sleep(2)
        rows = await pool.fetch(
            "SELECT booking_id, to_date, to_date_day, from_area_id, quality, version FROM cab_rides"
            " WHERE booking_id = ANY($1::bigint[]) ORDER BY booking_id",
            [booking, booking + 1, booking + 2],
        )
        assert [r["booking_id"] for r in rows] == [booking, booking + 1]  # once each
        assert rows[0]["to_date"] is None and str(rows[0]["to_date_day"]) == "2013-01-02"
        assert rows[1]["from_area_id"] is None and "no_pickup_area" in rows[1]["quality"]
        assert {r["version"] for r in rows} == {refused_at}  # accepted as of their refusal
    finally:
        await pool.close()
    status, tracked = _call(stack_env, "GET", f"/v1/requests/{ids[0]}")
    assert tracked["items"][0]["replayed_as"] == report["request_ids"][ids[0]]
    status, ride = _call(stack_env, "GET", f"/v1/rides/{booking}")
    assert (status, ride["to_date"], ride["to_date_day"]) == (200, None, "2013-01-02")
    assert "to_date_date_only" in ride["quality"]


async def test_refusals_quoting_a_nul_are_quarantined_and_the_persister_keeps_going(
    stack_env: dict[str, str],
) -> None:
    """jsonb cannot hold U+0000: a refusal whose errors quote one (a date, an unknown field) once
    stopped the persister. Both are quarantined, and a good ride posted after them is stored."""
    booking = int(time.time() * 1000) % 10**9 + 4 * 10**13
    bad_date = {**example_ride(), "booking_id": booking, "from_date": "1/1/2013 2:00:00\x00"}
    bad_extra = {**example_ride(), "booking_id": booking + 1, "note": "a\x00b"}
    positions = []
    for bad in (bad_date, bad_extra):
        status, body = _call(stack_env, "POST", "/v1/rides", bad)
        assert status == 422, body
        positions.append(tuple(int(x) for x in body["request_id"][1:].split("-")))
    status, body = _call(stack_env, "POST", "/v1/rides", {**example_ride(), "booking_id": booking + 2})
    assert status == 202, body
    pool = await asyncpg.create_pool(stack_env["XRIDES_PG_DSN"], min_size=1, max_size=2)
    try:
        for (partition, offset), bad in zip(positions, (bad_date, bad_extra), strict=True):
            row = await _wait_for(
                pool,
                "SELECT body FROM quarantine WHERE kafka_partition = $1 AND kafka_offset = $2",
                partition,
                offset,
            )
            assert row is not None and orjson.loads(row) == bad  # the body byte for byte, NUL included
        stored = await _wait_for(pool, "SELECT 1 FROM cab_rides WHERE booking_id = $1", booking + 2)
        assert stored == 1
    finally:
        await pool.close()
