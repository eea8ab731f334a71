"""The persister against real Kafka and PostgreSQL: exactly-once effect through updates, replays,
poison, a database outage, SIGKILL and a rebalance.

The module stops the launcher's persister and runs its own (same topic, same group) so it can
kill and restart it; the launcher's is started again at the end.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from xrides.db.rides import ROW_COLUMNS
from xrides.kafka import AsyncProducer, KafkaConfig, ProducerConfig, TopicReader
from xrides.request_ids import Position
from xrides.ride import (
    RIDE_FIELDS,
    Ride,
    RideEnvelope,
    example_ride,
    new_version,
    parse_ride,
    postgres_columns,
)
from xrides.topics import RIDES, RIDES_DLQ

from conftest import REPO, PlatformProcess, free_port, wait_http

pytestmark = pytest.mark.integration


def stack(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "deploy.stack", *args], cwd=REPO, check=True, timeout=300)


@pytest.fixture(scope="module")
def own_persister_slot() -> Iterator[None]:
    stack("down", "--only", "persister")
    yield
    stack("up", "--only", "persister")


@pytest.fixture
def persister(
    own_persister_slot: None, stack_env: dict[str, str], tmp_path: Path
) -> Iterator[PersisterFactory]:
    factory = PersisterFactory(stack_env, tmp_path)
    yield factory
    for process in factory.started:
        process.stop()


class PersisterFactory:
    def __init__(self, stack_env: dict[str, str], tmp_path: Path) -> None:
        self.stack_env = stack_env
        self.tmp_path = tmp_path
        self.started: list[PlatformProcess] = []

    def start(self, **overrides: str) -> PlatformProcess:
        port = free_port()
        env = {**os.environ, **self.stack_env, "XRIDES_METRICS_PORT": str(port)}
        env.update({f"XRIDES_{k.upper()}": v for k, v in overrides.items()})
        process = PlatformProcess("persister", env, self.tmp_path / f"persister-{port}.log")
        process.start()
        self.started.append(process)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", 60, process.proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"persister did not start: {exc}\n{process.log_tail()}")
        return process


@pytest_asyncio.fixture
async def pg(stack_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(stack_env["XRIDES_PG_DSN"], min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest_asyncio.fixture
async def producer(stack_env: dict[str, str]) -> AsyncIterator[AsyncProducer]:
    """acks=all, idempotent; each send answers once Kafka acknowledged it (or failed within 30 s)."""
    config = ProducerConfig(
        stack_env["XRIDES_KAFKA_BOOTSTRAP"], delivery_timeout_ms=30_000, linger_ms=5, client_id="persister-it"
    )
    p = AsyncProducer(config)
    await p.start([RIDES.name])
    yield p
    await p.close()


def booking_ids(n: int) -> list[int]:
    start = random.randint(3 * 10**12, 4 * 10**12)
    return list(range(start, start + n))


def ride(booking_id: int, **changes: Any) -> Ride:
    return parse_ride({**example_ride(), "booking_id": booking_id, **changes})


def acknowledged(outcome: Position | BaseException) -> Position:
    """A send's position; its error raised."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def send_raw(producer: AsyncProducer, key: bytes, value: bytes) -> Position:
    (outcome,) = await producer.send_many(RIDES.name, [(key, value)])
    return acknowledged(outcome)


async def send(producer: AsyncProducer, envelope: RideEnvelope) -> tuple[int, int]:
    position = await send_raw(producer, envelope.key(), envelope.encode())
    return position.partition, position.offset


def dead_letters(
    bootstrap: str, source_partition: int, wanted: set[int], timeout_s: float = 30
) -> dict[int, tuple[bytes, bytes]]:
    """source offset -> (value, reason header) of the dead letters on ``rides.dlq`` from one
    partition of ``rides``, read from the start of the topic until every ``wanted`` offset is there
    or ``timeout_s`` passed (the worker writes dead letters after the batch's receipts)."""
    reader = TopicReader(KafkaConfig(bootstrap, "persister-it"))
    found: dict[int, tuple[bytes, bytes]] = {}
    try:
        start = {p: marks.low for p, marks in reader.watermarks(RIDES_DLQ.name).items()}
        deadline = time.monotonic() + timeout_s
        while True:
            ranges = {
                p: (start.get(p, marks.low), marks.high)
                for p, marks in reader.watermarks(RIDES_DLQ.name).items()
            }
            limit = sum(max(0, stop - begin) for begin, stop in ranges.values())
            for record in reader.read(RIDES_DLQ.name, ranges, limit):
                start[record.partition] = max(start.get(record.partition, 0), record.offset + 1)
                headers = dict(record.headers)
                if headers.get("source-partition") == str(source_partition).encode():
                    found[int(headers["source-offset"])] = (record.value, headers["reason"])
            if wanted <= set(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.5)
    finally:
        reader.close()


async def wait_for_receipts(
    pool: asyncpg.Pool, positions: list[tuple[int, int]], timeout_s: float = 120
) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await pool.fetch(
            "SELECT r.* FROM ride_receipts r JOIN unnest($1::int[], $2::bigint[]) AS p(part, off)"
            " ON r.kafka_partition = p.part AND r.kafka_offset = p.off",
            [p for p, _ in positions],
            [o for _, o in positions],
        )
        if len(rows) == len(positions) or time.monotonic() > deadline:
            return list(rows)
        await asyncio.sleep(0.2)


async def test_columns_match_the_ride_contract(pg: asyncpg.Pool) -> None:
    rows = await pg.fetch(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = 'cab_rides'"
    )
    live = {r["column_name"]: (r["data_type"], r["is_nullable"] == "YES") for r in rows}
    for name, (pg_type, nullable) in postgres_columns().items():
        assert live[name] == (pg_type, nullable), name
    assert set(live) == set(ROW_COLUMNS)
    assert live["quality"] == ("ARRAY", False) and live["extras"] == ("jsonb", True)
    assert live["to_date_day"] == ("date", True) and live["contract_version"] == ("smallint", False)


async def test_every_field_stored_as_sent_then_updates_and_replays(
    persister: PersisterFactory, pg: asyncpg.Pool, producer: AsyncProducer
) -> None:
    persister.start()
    first, second = booking_ids(2)
    original = ride(
        first,
        package_id=4,
        to_date="1/1/2013 3:15:07",
        from_city_id=15,
        to_city_id=32,
        from_lat=12.1234567,
        from_long=77.7654321,
        car_cancellation=0,
    )
    no_coordinates = ride(second, to_lat=None, to_long=None, from_lat=None, from_long=None, to_area_id=None)
    v1 = new_version()
    positions = [
        await send(producer, RideEnvelope(original, v1)),
        await send(producer, RideEnvelope(no_coordinates, v1)),
    ]
    receipts = await wait_for_receipts(pg, positions)
    assert [r["outcome"] for r in receipts] == ["stored", "stored"]

    for expected in (original, no_coordinates):
        row = await pg.fetchrow("SELECT * FROM cab_rides WHERE booking_id = $1", expected.booking_id)
        assert row is not None
        for field in RIDE_FIELDS:
            value = getattr(expected, field.name)
            stored = row[field.name]
            if isinstance(stored, Decimal):
                assert stored == Decimal(repr(value)), field.name
            else:
                assert stored == value, field.name

    # An update wins: cancel the ride.
    cancelled = parse_ride({**original.to_wire(), "car_cancellation": 1})
    v2 = new_version()
    position = await send(producer, RideEnvelope(cancelled, v2))
    (receipt,) = await wait_for_receipts(pg, [position])
    assert receipt["outcome"] == "stored"
    assert await pg.fetchval("SELECT car_cancellation FROM cab_rides WHERE booking_id = $1", first) == 1

    # A replay of the older version never wins, and says so.
    position = await send(producer, RideEnvelope(original, v1, source="replay"))
    (receipt,) = await wait_for_receipts(pg, [position])
    assert receipt["outcome"] == "superseded"
    row = await pg.fetchrow("SELECT car_cancellation, version FROM cab_rides WHERE booking_id = $1", first)
    assert row is not None
    assert (row["car_cancellation"], row["version"]) == (1, v2)


async def test_moving_the_pickup_month_leaves_one_row(
    persister: PersisterFactory, pg: asyncpg.Pool, producer: AsyncProducer
) -> None:
    persister.start()
    (booking,) = booking_ids(1)
    january = ride(booking, from_date="1/20/2013 9:00")
    march = ride(booking, from_date="3/2/2013 9:00")
    positions = [
        await send(producer, RideEnvelope(january, new_version())),
        await send(producer, RideEnvelope(march, new_version())),
    ]
    await wait_for_receipts(pg, positions)
    rows = await pg.fetch(
        "SELECT tableoid::regclass::text AS part FROM cab_rides WHERE booking_id = $1", booking
    )
    assert [r["part"] for r in rows] == ["cab_rides_2013_03"]


async def test_poison_is_dead_lettered_and_the_partition_keeps_flowing(
    persister: PersisterFactory, pg: asyncpg.Pool, producer: AsyncProducer, stack_env: dict[str, str]
) -> None:
    persister.start()
    key = b"7"  # one key: garbage, an invalid ride and a good ride share a partition, in order
    bad_json = await send_raw(producer, key, b"{not json")
    invalid = RideEnvelope(ride(7), new_version()).encode().replace(b'"user_id":22177', b'"user_id":"x"')
    bad_ride = await send_raw(producer, key, invalid)
    (booking,) = booking_ids(1)
    good = await send_raw(producer, key, RideEnvelope(ride(booking), new_version()).encode())
    positions = [(m.partition, m.offset) for m in (bad_json, bad_ride, good)]
    receipts = await wait_for_receipts(pg, positions)
    assert [r["outcome"] for r in sorted(receipts, key=lambda r: r["kafka_offset"])] == [
        "failed",
        "failed",
        "stored",
    ]
    failures = await pg.fetch(
        "SELECT kafka_offset, reason, payload FROM ingest_failures WHERE kafka_partition = $1"
        " AND kafka_offset = ANY($2::bigint[]) ORDER BY kafka_offset",
        bad_json.partition,
        [bad_json.offset, bad_ride.offset],
    )
    assert failures[0]["reason"].startswith("undecodable message")
    assert bytes(failures[0]["payload"]) == b"{not json"
    assert "user_id data type mismatch" in failures[1]["reason"]

    found = await asyncio.to_thread(
        dead_letters,
        stack_env["XRIDES_KAFKA_BOOTSTRAP"],
        bad_json.partition,
        {bad_json.offset, bad_ride.offset},
    )
    assert found[bad_json.offset][0] == b"{not json"
    assert found[bad_ride.offset][1].startswith(b"invalid ride")


async def test_rows_postgres_refuses_are_isolated(
    persister: PersisterFactory, pg: asyncpg.Pool, producer: AsyncProducer
) -> None:
    persister.start()
    refused_driver = 999_999_937
    await pg.execute(
        f"ALTER TABLE cab_rides ADD CONSTRAINT test_refuse_driver CHECK (driver_id <> {refused_driver})"
    )
    try:
        ids = booking_ids(20)
        version = new_version()
        positions = [
            await send(producer, RideEnvelope(ride(b, driver_id=refused_driver if i == 7 else 5), version))
            for i, b in enumerate(ids)
        ]
        receipts = {
            (r["kafka_partition"], r["kafka_offset"]): r["outcome"]
            for r in await wait_for_receipts(pg, positions)
        }
    finally:
        await pg.execute("ALTER TABLE cab_rides DROP CONSTRAINT test_refuse_driver")
    assert receipts[positions[7]] == "failed"
    assert [receipts[p] for i, p in enumerate(positions) if i != 7] == ["stored"] * 19
    reason = await pg.fetchval(
        "SELECT reason FROM ingest_failures WHERE kafka_partition = $1 AND kafka_offset = $2", *positions[7]
    )
    assert reason.startswith("refused by PostgreSQL: CheckViolationError")


async def stream(producer: AsyncProducer, ids: list[int], per_second: float) -> list[tuple[int, int]]:
    """Produce one envelope per booking at a steady rate; return every acknowledged position."""
    chunks: list[asyncio.Task[list[Position | BaseException]]] = []
    version = new_version()
    pending: list[tuple[bytes | None, bytes]] = []
    for index, booking in enumerate(ids):
        pending.append((str(booking).encode(), RideEnvelope(ride(booking), version).encode()))
        if index % 50 == 49:  # 50 sent, not waited for, then a pause: the rate
            chunks.append(asyncio.create_task(producer.send_many(RIDES.name, pending)))
            pending = []
            await asyncio.sleep(50 / per_second)
    if pending:
        chunks.append(asyncio.create_task(producer.send_many(RIDES.name, pending)))
    outcomes = [outcome for chunk in await asyncio.gather(*chunks) for outcome in chunk]
    return [(p.partition, p.offset) for p in map(acknowledged, outcomes)]


async def assert_exactly_once(pool: asyncpg.Pool, ids: list[int], positions: list[tuple[int, int]]) -> None:
    receipts = await wait_for_receipts(pool, positions, timeout_s=180)
    assert len(receipts) == len(positions), "a message has no receipt (lost)"
    assert {r["outcome"] for r in receipts} == {"stored"}
    counts = await pool.fetch(
        "SELECT booking_id, count(*) AS n FROM cab_rides WHERE booking_id = ANY($1::bigint[]) GROUP BY 1", ids
    )
    assert len(counts) == len(ids), f"{len(ids) - len(counts)} acknowledged rides missing"
    assert {r["n"] for r in counts} == {1}, "a ride is stored twice"


async def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    persister: PersisterFactory, pg: asyncpg.Pool, producer: AsyncProducer
) -> None:
    first = persister.start(batch_max_rows="500")
    ids = booking_ids(6000)
    streaming = asyncio.create_task(stream(producer, ids, per_second=3000))
    await asyncio.sleep(1.0)
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    persister.start(batch_max_rows="500")
    positions = await streaming
    await assert_exactly_once(pg, ids, positions)


async def test_rebalance_to_a_second_persister_and_back(
    persister: PersisterFactory, pg: asyncpg.Pool, producer: AsyncProducer
) -> None:
    persister.start()
    ids = booking_ids(6000)
    streaming = asyncio.create_task(stream(producer, ids, per_second=2000))
    await asyncio.sleep(0.5)
    second = persister.start()
    await asyncio.sleep(1.5)
    assert await asyncio.to_thread(second.stop) == 0  # SIGTERM: finish the batch, commit, leave the group
    positions = await streaming
    await assert_exactly_once(pg, ids, positions)


async def test_postgres_outage_mid_stream(
    persister: PersisterFactory, pg: asyncpg.Pool, producer: AsyncProducer, stack_env: dict[str, str]
) -> None:
    process = persister.start()
    ids = booking_ids(3000)
    streaming = asyncio.create_task(stream(producer, ids, per_second=1500))
    await asyncio.sleep(0.5)
    await pg.close()
    await asyncio.to_thread(stack, "down", "--only", "postgres")
    try:
        await asyncio.sleep(3)
        assert process.proc is not None
        assert process.proc.poll() is None, (
            "the persister died while PostgreSQL was down:\n" + process.log_tail()
        )
    finally:
        await asyncio.to_thread(stack, "up", "--only", "postgres")
    positions = await streaming
    pool = await asyncpg.create_pool(stack_env["XRIDES_PG_DSN"], min_size=1, max_size=2)
    try:
        await assert_exactly_once(pool, ids, positions)
    finally:
        await pool.close()


def test_migrations_are_idempotent(stack_env: dict[str, str]) -> None:
    env = {**os.environ, **stack_env}
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "persister", "migrate"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert "none (up to date)" in result.stdout


def test_partitions_exist_ahead(stack_env: dict[str, str]) -> None:
    async def months() -> set[str]:
        conn = await asyncpg.connect(stack_env["XRIDES_PG_DSN"])
        try:
            rows = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'cab_rides'::regclass"
            )
            return {r["relname"] for r in rows}
        finally:
            await conn.close()

    names = asyncio.run(months())
    now = datetime.now(UTC)
    for days in (0, 31, 62):
        month = now + timedelta(days=days)
        assert f"cab_rides_{month:%Y_%m}" in names
