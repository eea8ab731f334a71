"""What the parts can do on their own on this machine, measured with their own fastest paths.

The platform's figures are reported as ratios to these: how much of Kafka's, PostgreSQL's and
Elasticsearch's own capacity the API, the persister and the indexer turn into rides.

- Kafka: the broker's own ``ProducerPerformance`` tool (Java, acks=all) against the same broker,
  records the size of a ride envelope, into a scratch topic with the ``rides`` partition count.
- PostgreSQL: ``COPY`` (binary, asyncpg) of the persister's own stage rows into a logged table
  shaped like ``cab_rides`` with its primary key, in 5,000-row transactions.
- Elasticsearch: ``_bulk`` of enriched ride documents (the Flink job's enrichment) pre-encoded as
  NDJSON, two requests in flight, into a scratch index with the rides mapping.

Every scratch topic, table and index is removed afterwards.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import orjson

from loadgen.rides import RideGenerator
from persister.writer import STAGE_COLUMNS, Message, stage_row
from xrides.kafka import KafkaAdmin, KafkaConfig
from xrides.ride import RideEnvelope, new_version, parse_ride
from xrides.ride.enrich import ServiceRegion, enrich
from xrides.search.templates import rides_template
from xrides.topics import RIDES

SCRATCH = "xrides-bench-limit"
_PERF_LINE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


def sample_envelopes(count: int, seed: int = 11) -> list[RideEnvelope]:
    generator = RideGenerator(seed=seed, first_booking_id=9 * 10**12 + seed * 10**7)
    return [RideEnvelope(parse_ride(generator.ride()), new_version()) for _ in range(count)]


def kafka_producer_limit(
    kafka_run_class: Path, bootstrap: str, records: int, record_size: int, partitions: int
) -> dict[str, Any]:
    """Records/s of Kafka's own producer benchmark at acks=all."""
    admin = KafkaAdmin(KafkaConfig(bootstrap, "bench-limits"))
    try:
        # shaped like ``rides`` (replication from the brokers there are); an existing one is kept
        admin.ensure_topics([replace(RIDES, name=SCRATCH, partitions=partitions, cluster_partitions=None)])
        time.sleep(1)  # the new partitions' leaders
        out = subprocess.run(
            [
                str(kafka_run_class),
                "org.apache.kafka.tools.ProducerPerformance",
                "--topic", SCRATCH,
                "--num-records", str(records),
                "--record-size", str(record_size),
                "--throughput", "-1",
                "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
                "enable.idempotence=true", "linger.ms=5", "batch.size=262144", "compression.type=none",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout  # fmt: skip
    finally:
        admin.delete_topics([SCRATCH])  # a missing topic is ignored
    match = _PERF_LINE.findall(out)
    if not match:
        raise RuntimeError(f"ProducerPerformance printed no summary: {out[-500:]}")
    sent, rate = match[-1]
    return {"records": int(sent), "record_bytes": record_size, "records_per_s": round(float(rate))}


async def postgres_copy_limit(dsn: str, rows: int, chunk: int = 5000) -> dict[str, Any]:
    """Rows/s of binary COPY of stage rows into a logged table shaped like ``cab_rides``."""
    messages = [
        Message(RIDES.name, 0, i, None, b"", envelope=e) for i, e in enumerate(sample_envelopes(rows))
    ]
    records = [stage_row(m) for m in messages]
    conn = await asyncpg.connect(dsn)
    table = SCRATCH.replace("-", "_")
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute(f"CREATE TABLE {table} (LIKE cab_rides INCLUDING DEFAULTS INCLUDING INDEXES)")
        started = time.perf_counter()
        for begin in range(0, rows, chunk):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    table, records=records[begin : begin + chunk], columns=STAGE_COLUMNS
                )
        elapsed = time.perf_counter() - started
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
    return {"rows": rows, "chunk": chunk, "rows_per_s": round(rows / elapsed)}


async def elasticsearch_bulk_limit(
    es_url: str, docs: int, chunk: int = 2000, in_flight: int = 2
) -> dict[str, Any]:
    """Docs/s Elasticsearch indexes from pre-encoded ``_bulk`` bodies of enriched rides."""
    zone, region = ZoneInfo("Asia/Kolkata"), ServiceRegion()
    index = SCRATCH
    lines = []
    for envelope in sample_envelopes(docs, seed=12):
        action = {"index": {"_index": index, "_id": str(envelope.ride.booking_id)}}
        lines.append(orjson.dumps(action) + b"\n" + orjson.dumps(enrich(envelope.ride, zone, region)) + b"\n")
    bodies = [b"".join(lines[i : i + chunk]) for i in range(0, docs, chunk)]
    template = rides_template(index)["template"]
    headers = {"Content-Type": "application/x-ndjson"}
    async with aiohttp.ClientSession(base_url=es_url) as http:
        async with http.delete(f"/{index}") as _:
            pass
        async with http.put(f"/{index}", json=template) as response:
            response.raise_for_status()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        errors = 0

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                body = queue.get_nowait()
                async with http.post("/_bulk", data=body, headers=headers) as response:
                    result = orjson.loads(await response.read())
                    errors += sum(1 for item in result.get("items", ()) if item["index"].get("error"))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        async with http.post(f"/{index}/_refresh") as _:
            pass
        elapsed = time.perf_counter() - started
        async with http.get(f"/{index}/_count") as response:
            count = (await response.json())["count"]
        async with http.delete(f"/{index}") as _:
            pass
    if errors or count != docs:
        raise RuntimeError(f"bulk limit run lost documents: {count}/{docs} indexed, {errors} errors")
    return {"docs": docs, "chunk": chunk, "in_flight": in_flight, "docs_per_s": round(docs / elapsed)}
