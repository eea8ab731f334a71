"""Reconciliation on the real stack: ``python -m reconcile`` run and served as deployed.

Two worlds. The platform's own: rides posted through the running API go through the real
persister, Flink job and indexer; the day's counts must agree with PostgreSQL and Elasticsearch,
and a document deleted from a copy of the day's index (an isolated prefix, so the platform's data
is never touched) must be found and named. And a world of its own, where every kind of gap is
injected: a fresh database (migrated like production), a fresh two-partition topic, its own daily
indices and archive prefix; rides are produced to the topic, stored through the persister's writer
(receipts, offsets and dead letters as in production), indexed as the Flink job would and archived by
the archiver; then rows, documents and receipts go missing on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import pytest
from elasticsearch import AsyncElasticsearch, helpers

from archiver.archive import Archiver
from archiver.settings import ArchiverSettings
from loadgen.synthetic import make_rides
from persister.sink import decode
from persister.writer import RideWriter
from xrides.archive.store import ArchiveStore
from xrides.db.scratch import scratch_database
from xrides.kafka import DeliveryProducer, KafkaAdmin, KafkaConfig, OutRecord, Record
from xrides.ride import Ride, RideEnvelope, example_ride, format_timestamp
from xrides.ride.enrich import ServiceRegion, daily_index, enrich
from xrides.search.templates import rides_template, template_name
from xrides.topics import RIDES

from conftest import REPO, free_port, wait_http

pytestmark = pytest.mark.integration


def reconcile(env: dict[str, str], first: date, last: date) -> tuple[int, dict[str, Any]]:
    """``python -m reconcile run --json`` over ``[first, last]``: exit code and report."""
    result = subprocess.run(
        [sys.executable, "-m", "reconcile", "run", "--from", str(first), "--to", str(last), "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def day_row(report: dict[str, Any], day: date | None) -> dict[str, Any]:
    key = day.isoformat() if day else None
    rows = [r for r in report["days"] if r["day"] == key]
    assert rows, f"no row for {key} in {[r['day'] for r in report['days']]}"
    row: dict[str, Any] = rows[0]
    return row


def ids_of(row: dict[str, Any], difference: str) -> list[int]:
    found: list[int] = row["differences"].get(difference, {}).get("booking_ids", [])
    return found


async def _drop_indices(es: AsyncElasticsearch, prefix: str) -> None:
    """A test prefix's indices, by name (the cluster refuses wildcard deletes), and its template."""
    found = await es.indices.get(index=f"{prefix}*", allow_no_indices=True, ignore_unavailable=True)
    for name in found.body:
        await es.options(ignore_status=404).indices.delete(index=name)
    await es.options(ignore_status=404).indices.delete_index_template(name=template_name(prefix))


# --- the platform's world ------------------------------------------------------------------------


def _post(url: str, key: str, ride: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=orjson.dumps(ride),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        body: dict[str, Any] = orjson.loads(response.read())
        return body


async def test_rides_posted_through_the_api_reconcile_and_a_missing_document_is_named(
    stack_env: dict[str, str],
) -> None:
    api, key = stack_env["XRIDES_API_URL"], stack_env["XRIDES_API_KEY"]
    # A day inside the hot window but off the days other suites post to; unique booking ids.
    day = datetime.now(UTC).date() - timedelta(days=random.randint(10, 50))
    first_id = random.randint(5 * 10**12, 6 * 10**12)
    rides = []
    for n in range(6):
        pickup = datetime(day.year, day.month, day.day, 2 + 3 * n, 15, tzinfo=UTC)
        rides.append(
            {
                **example_ride(),
                "booking_id": first_id + n,
                "from_date": format_timestamp(pickup),
                "booking_created": format_timestamp(pickup - timedelta(hours=2)),
            }
        )
    for ride in rides:
        await asyncio.to_thread(_post, f"{api}/v1/rides", key, ride)
    # An update of the first booking (same day, another area): still one booking of the day.
    await asyncio.to_thread(_post, f"{api}/v1/rides", key, {**rides[0], "from_area_id": 99})
    ids = [r["booking_id"] for r in rides]
    index = f"rides-{day:%Y.%m.%d}"

    es = AsyncElasticsearch(stack_env["XRIDES_ES_URL"])
    conn = await asyncpg.connect(stack_env["XRIDES_PG_DSN"])
    prefix = f"recontest{uuid.uuid4().hex[:8]}-rides-"
    try:
        deadline = time.monotonic() + 180
        while True:
            stored = await conn.fetchval(
                "SELECT count(*) FROM cab_rides WHERE booking_id = ANY($1::bigint[])"
                " AND (booking_id <> $2 OR from_area_id = 99)",
                ids,
                ids[0],
            )
            await es.options(ignore_status=404).indices.refresh(index=index)
            found = await es.options(ignore_status=404).search(
                index=index, query={"ids": {"values": [str(i) for i in ids]}}, size=10
            )
            hits = found.get("hits", {}).get("hits", [])
            updated = [h for h in hits if h["_id"] == str(ids[0]) and h["_source"]["from_area_id"] == 99]
            if stored == 6 and len(hits) == 6 and updated:
                break
            assert time.monotonic() < deadline, f"stored {stored}, indexed {len(hits)} of 6 after 180 s"
            await asyncio.sleep(1)

        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        in_pg = await conn.fetchval(
            "SELECT count(*) FROM cab_rides WHERE from_date >= $1 AND from_date < $2",
            start,
            start + timedelta(days=1),
        )
        in_es = (await es.count(index=index))["count"]
        env = {**os.environ, **stack_env, "XRIDES_SETTLE_S": "0", "XRIDES_LOG_LEVEL": "WARNING"}
        code, report = await asyncio.to_thread(reconcile, env, day, day)
        row = day_row(report, day)
        assert row["stored"] == in_pg >= 6
        assert row["indexed"] == in_es >= 6
        assert row["acknowledged"] == row["stored"], "every acknowledged booking of the day is stored"
        assert (row["pending"], row["dead_lettered"], row["archived"]) == (0, 0, None)
        assert row["gaps"] == {"acknowledged_stored": 0, "stored_indexed": 0, "stored_archived": 0}
        assert code == (1 if any(report["gaps"].values()) else 0)

        # The injected gap: the day's index copied under an isolated prefix, one document deleted.
        await es.indices.put_index_template(name=template_name(prefix), **rides_template(prefix))
        copy = f"{prefix}{day:%Y.%m.%d}"
        # (the local cluster has no reindex module: copied document by document)
        copied = [
            {"_index": copy, "_id": hit["_id"], "_source": hit["_source"]}
            async for hit in helpers.async_scan(es, index=index, query={"query": {"match_all": {}}})
        ]
        await helpers.async_bulk(es, copied, refresh=True)
        await es.delete(index=copy, id=str(ids[3]), refresh=True)
        code, report = await asyncio.to_thread(reconcile, {**env, "XRIDES_ES_RIDES_PREFIX": prefix}, day, day)
        row = day_row(report, day)
        assert code == 1
        assert row["indexed"] == in_es - 1
        assert row["gaps"]["stored_indexed"] == 1
        assert ids_of(row, "missing_from_elasticsearch") == [ids[3]]
        assert ids_of(row, "extra_in_elasticsearch") == []
    finally:
        await _drop_indices(es, prefix)
        await es.close()
        await conn.close()


# --- a world of its own, every gap injected ----------------------------------------------------

REFERENCE = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)  # hot window: pickups after 2026-04-02 06:00
CUTOFF = date(2026, 4, 2)
OLD_VERSION = int((REFERENCE - timedelta(days=1)).timestamp() * 1_000_000)


@dataclass
class World:
    env: dict[str, str]
    dsn: str
    topic: str
    prefix: str
    archiver: ArchiverSettings
    positions: dict[int, tuple[int, int]] = field(default_factory=dict)  # booking -> (partition, offset)


@pytest.fixture
async def world(stack_env: dict[str, str]) -> AsyncIterator[World]:
    tag = uuid.uuid4().hex[:8]
    async with scratch_database(stack_env["XRIDES_PG_DSN"], f"xrides_recontest_{tag}") as dsn:
        async for world in _world(stack_env, tag, dsn):
            yield world


async def _world(stack_env: dict[str, str], tag: str, dsn: str) -> AsyncIterator[World]:
    topic = f"recontest-{tag}-rides"
    kafka_admin = KafkaAdmin(KafkaConfig(stack_env["XRIDES_KAFKA_BOOTSTRAP"], "reconcile-it"))
    created = kafka_admin.ensure_topics([replace(RIDES, name=topic, partitions=2, cluster_partitions=None)])
    assert created == [topic]
    prefix = f"recontest{tag}-rides-"
    archiver = ArchiverSettings(
        pg_dsn=dsn,
        es_url=stack_env["XRIDES_ES_URL"],
        es_rides_prefix=prefix,
        s3_endpoint=stack_env["XRIDES_S3_ENDPOINT"],
        s3_access_key=stack_env["XRIDES_S3_ACCESS_KEY"],
        s3_secret_key=stack_env["XRIDES_S3_SECRET_KEY"],
        s3_bucket=stack_env["XRIDES_S3_BUCKET"],
        archive_prefix=f"recontest/{tag}/rides",
        reference_time=REFERENCE.isoformat(),
    )
    env = {
        **os.environ,
        "XRIDES_PG_DSN": dsn,
        "XRIDES_KAFKA_BOOTSTRAP": stack_env["XRIDES_KAFKA_BOOTSTRAP"],
        "XRIDES_RIDES_TOPIC": topic,
        "XRIDES_PERSISTER_GROUP_ID": "recontest",
        "XRIDES_ES_URL": archiver.es_url,
        "XRIDES_ES_RIDES_PREFIX": prefix,
        "XRIDES_S3_ENDPOINT": archiver.s3_endpoint,
        "XRIDES_S3_ACCESS_KEY": archiver.s3_access_key,
        "XRIDES_S3_SECRET_KEY": archiver.s3_secret_key,
        "XRIDES_S3_BUCKET": archiver.s3_bucket,
        "XRIDES_ARCHIVE_PREFIX": archiver.archive_prefix,
        "XRIDES_REFERENCE_TIME": REFERENCE.isoformat(),
        "XRIDES_LOOKBACK_DAYS": "120",
        "XRIDES_LOG_LEVEL": "WARNING",
    }
    try:
        yield World(env, dsn, topic, prefix, archiver)
    finally:
        store = ArchiveStore(archiver.store_config())
        for obj in store.objects(store.prefix + "/"):
            store.delete(obj.key)
        es = AsyncElasticsearch(archiver.es_url)
        try:
            await _drop_indices(es, prefix)
        finally:
            await es.close()
        kafka_admin.delete_topics([topic])


def _produce(bootstrap: str, topic: str, messages: list[tuple[int, bytes, bytes]]) -> list[tuple[int, int]]:
    """(partition, key, value) in order -> (partition, offset) of each."""
    producer = DeliveryProducer(KafkaConfig(bootstrap, "reconcile-it"))
    try:
        positions = producer.send_all([OutRecord(topic, v, key=k, partition=p) for p, k, v in messages])
    finally:
        producer.close()
    return [(p.partition, p.offset) for p in positions]


def _day(ride: Ride) -> date:
    return ride.from_date.astimezone(UTC).date()


def _invalid_envelope(ride: Ride, version: int) -> bytes:
    """A decodable envelope whose ride breaks the contract (a latitude of 99): a dead letter."""
    body = orjson.loads(RideEnvelope(ride, version, "api").encode())
    body["ride"]["from_lat"] = 99.0
    return orjson.dumps(body)


async def _index(es: AsyncElasticsearch, prefix: str, rides: list[Ride], versions: dict[int, int]) -> None:
    """As the Flink job and the indexer would: enriched documents, the accepted version, hot days only."""
    await es.indices.put_index_template(name=template_name(prefix), **rides_template(prefix))
    oldest = REFERENCE - timedelta(days=60)

    def actions() -> Any:
        for ride in rides:
            if ride.from_date < oldest:
                continue
            doc = enrich(ride, ZoneInfo("Asia/Kolkata"), ServiceRegion())
            doc["version"] = versions[ride.booking_id]
            doc["received_at"] = format_timestamp(
                datetime.fromtimestamp(versions[ride.booking_id] / 1e6, UTC)
            )
            yield {"_index": daily_index(prefix, ride), "_id": str(ride.booking_id), "_source": doc}

    await helpers.async_bulk(es, actions(), refresh=True)


async def test_every_injected_gap_is_counted_and_named(world: World) -> None:
    w = world
    rides = [r for r in make_rides(400, REFERENCE, 100, seed=23) if r.from_date < REFERENCE]
    hot = [r for r in rides if _day(r) > CUTOFF]
    cold = [r for r in rides if _day(r) < CUTOFF]
    assert len(hot) > 100 and len(cold) > 100
    # The injected cases, each a distinct booking on a known day.
    pending_old, pending_fresh, hole, dead, lost, unindexed = hot[:6]
    archived_lost = cold[0]
    special = {pending_old.booking_id, pending_fresh.booking_id, hole.booking_id, dead.booking_id}
    normal = [r for r in rides if r.booking_id not in special]
    versions = {r.booking_id: OLD_VERSION + n for n, r in enumerate(rides)}
    fresh_version = int(time.time() * 1_000_000)

    # Partition 1 gets the hole half-way; partition 0 ends with the two unconsumed messages.
    plan: list[tuple[int, bytes, bytes]] = []
    for n, ride in enumerate(normal):
        envelope = RideEnvelope(ride, versions[ride.booking_id], "api")
        plan.append((n % 2, envelope.key(), envelope.encode()))
        if n == len(normal) // 2:
            plan.append(
                (1, str(hole.booking_id).encode(), RideEnvelope(hole, versions[hole.booking_id]).encode())
            )
            plan.append(
                (0, str(dead.booking_id).encode(), _invalid_envelope(dead, versions[dead.booking_id]))
            )
    plan.append((0, b"old", RideEnvelope(pending_old, versions[pending_old.booking_id]).encode()))
    plan.append((0, b"new", RideEnvelope(pending_fresh, fresh_version).encode()))
    bootstrap = w.env["XRIDES_KAFKA_BOOTSTRAP"]
    placed = await asyncio.to_thread(_produce, bootstrap, w.topic, plan)
    records = [Record(w.topic, p, o, k, v) for (p, o), (_, k, v) in zip(placed, plan, strict=True)]
    skipped = {placed[-2], placed[-1], placed[len(normal) // 2 + 1]}  # the two pending, the hole
    messages = [decode(r) for r in records if (r.partition, r.offset) not in skipped]
    assert sum(1 for m in messages if m.error) == 1, "the invalid ride is the one poisoned message"
    ends = {p: max(o for q, o in placed if q == p) + 1 for p in (0, 1)}
    writer = RideWriter(w.dsn, "recontest")
    try:
        await writer.write(w.topic, messages, {0: placed[-2][1], 1: ends[1]})
    finally:
        await writer.close()

    es = AsyncElasticsearch(w.archiver.es_url)
    conn = await asyncpg.connect(w.dsn)
    try:
        await _index(es, w.prefix, normal, versions)
        async with Archiver(w.archiver) as archiver:
            run = await archiver.run()
        assert {d.day for d in run.days} == {_day(r) for r in normal if _day(r) < CUTOFF}
        # The damage: a stored row lost on a hot day and on an archived day, a document lost.
        for ride in (lost, archived_lost):
            await conn.execute(
                "DELETE FROM cab_rides WHERE booking_id = $1 AND from_date = $2",
                ride.booking_id,
                ride.from_date,
            )
        await es.delete(index=daily_index(w.prefix, unindexed), id=str(unindexed.booking_id), refresh=True)
    finally:
        await es.close()
        await conn.close()

    per_day = Counter(_day(r) for r in rides)  # every booking was acknowledged (the dead one too)
    stored_day = Counter(_day(r) for r in normal if r not in (lost, archived_lost))
    archived_day = Counter(_day(r) for r in normal if _day(r) < CUTOFF)
    indexed_day = Counter(_day(r) for r in normal if _day(r) > CUTOFF and r is not unindexed)

    first, last = REFERENCE.date() - timedelta(days=119), REFERENCE.date() + timedelta(days=7)
    code, report = await asyncio.to_thread(reconcile, w.env, first, last)
    assert code == 1
    rows = {r["day"]: r for r in report["days"]}
    assert None not in rows, "every message here has a readable day"
    assert set(rows) == {d.isoformat() for d in per_day}
    for day, count in per_day.items():
        row = rows[day.isoformat()]
        assert row["acknowledged"] == count, day
        assert row["stored"] == stored_day[day], day
        assert row["indexed"] == (indexed_day[day] if day > CUTOFF else None), day
        assert row["archived"] == (archived_day[day] or None if day < CUTOFF else None), day
        assert row["dead_lettered"] == (1 if day == _day(dead) else 0), day

    def named(difference: str) -> set[int]:
        return {b for r in report["days"] for b in ids_of(r, difference)}

    # The fresh unconsumed ride is in flight, not a gap; the old one, the hole and lost rows are.
    assert named("not_stored") == {
        pending_old.booking_id,
        hole.booking_id,
        lost.booking_id,
        archived_lost.booking_id,
    }
    assert named("stored_without_receipt") == set()
    assert named("missing_from_elasticsearch") == {unindexed.booking_id}
    assert named("extra_in_elasticsearch") == {lost.booking_id}
    assert named("extra_in_archive") == {archived_lost.booking_id}
    assert named("missing_from_archive") == set()
    assert report["gaps"] == {"acknowledged_stored": 4, "stored_indexed": 2, "stored_archived": 1}
    pending = Counter(_day(r) for r in (pending_old, pending_fresh))
    assert {d: r["pending"] for d, r in rows.items() if r["pending"]} == {
        d.isoformat(): n for d, n in pending.items()
    }
    partitions = {p["partition"]: p for p in report["kafka"]["partitions"]}
    assert partitions[1]["receipts_expected"] - partitions[1]["receipts_found"] == 1
    assert partitions[0]["end_offset"] - partitions[0]["committed"] == 2

    # serve: the same, as gauges over the fixed windows, with its health check.
    gauges = await asyncio.to_thread(_serve_and_scrape, w.env)
    recent = [
        d
        for d in per_day
        if REFERENCE.date() - timedelta(days=6) <= d <= REFERENCE.date() + timedelta(days=7)
    ]
    assert recent, "the 7-day window has rides"
    for window, days in (("total", list(per_day)), ("7d", recent)):
        expected = {
            "acknowledged": sum(per_day[d] for d in days),
            "stored": sum(stored_day[d] for d in days),
            "indexed": sum(indexed_day[d] for d in days if d > CUTOFF),
            "archived": sum(archived_day[d] for d in days),
            "dead_lettered": 1 if _day(dead) in days else 0,
        }
        for stage, value in expected.items():
            assert gauges[f'xrides_reconcile_rides{{stage="{stage}",window="{window}"}}'] == value, (
                window,
                stage,
            )
    assert gauges['xrides_reconcile_gap_rides{between="acknowledged_stored",window="total"}'] == 4
    assert gauges['xrides_reconcile_gap_rides{between="stored_indexed",window="total"}'] == 2
    assert gauges['xrides_reconcile_gap_rides{between="stored_archived",window="total"}'] == 1
    assert 0 <= gauges['xrides_reconcile_newest_ride_age_seconds{store="postgres"}'] < 600
    assert 'xrides_reconcile_newest_ride_age_seconds{store="elasticsearch"}' in gauges


def _serve_and_scrape(world_env: dict[str, str]) -> dict[str, float]:
    """Run ``reconcile serve``; once its first run completed, its xrides_reconcile_* samples."""
    port = free_port()
    env = {**world_env, "XRIDES_METRICS_PORT": str(port), "XRIDES_INTERVAL_S": "3600"}
    log_path = Path(f"/tmp/reconcile-{port}.log")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconcile", "serve"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            samples = {
                line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("xrides_reconcile_")
            }
            if samples.get("xrides_reconcile_last_success_timestamp_seconds", 0) > 0:
                break
            assert time.monotonic() < deadline, "no successful run within 120 s"
            time.sleep(0.5)
        check = subprocess.run([sys.executable, "-m", "reconcile", "--check"], env=env, cwd=REPO, check=False)
        assert check.returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    return samples
