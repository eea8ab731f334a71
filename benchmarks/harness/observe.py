"""What a scenario does downstream of the acknowledgement: lag, POST -> stored, POST -> searchable.

- **Consumer lag**: every second, each consumer group's committed offsets against the topic's end
  offsets (the persister and the Flink job on ``rides``, the indexer on ``rides.es``). The Flink
  job commits on checkpoints, so its lag moves in checkpoint-sized steps.
- **POST -> stored** for *every* accepted request: its request id is its Kafka position, and the
  persister's receipt for that position carries ``stored_at`` (``clock_timestamp()`` at the end of
  the batch's work), so the latency is ``stored_at - intended send time``.
- **POST -> searchable** for probe rides sent beside the load (a few per second, like a synthetic
  monitor): each is looked for by id in ``rides-*`` every 100 ms until a search returns it, i.e.
  after the indexer wrote it *and* a refresh made it visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson

from flink_jobs.settings import StreamSettings
from indexer.settings import IndexerSettings
from loadgen.openloop import latency_summary
from loadgen.rides import RideGenerator
from persister.settings import PersisterSettings
from xrides.kafka import KafkaAdmin, KafkaConfig, TopicReader
from xrides.request_ids import parse_request_id
from xrides.topics import RIDES, RIDES_ES

# (name, consumer group, topic): the groups' defaults, as the local stack runs them
GROUPS = (
    ("persister", PersisterSettings().group_id, RIDES.name),
    ("flink-job", StreamSettings().flink_group_id, RIDES.name),
    ("es-indexer", IndexerSettings().indexer_group_id, RIDES_ES.name),
)


class LagProbe:
    """Committed-offset lag per consumer group (the Kafka calls are blocking: run in a thread)."""

    def __init__(self, bootstrap: str) -> None:
        self.config = KafkaConfig(bootstrap, "bench-lag-probe")
        self.admin = KafkaAdmin(self.config, timeout_s=5.0)
        self.reader = TopicReader(self.config)

    def lag(self) -> dict[str, int]:
        """Lag per group; after a failure the clients are built afresh (an admin client whose broker
        was killed kept timing out on group offsets long after the broker was back)."""
        try:
            out = {}
            for name, group, topic in GROUPS:
                ends = {p: marks.high for p, marks in self.reader.watermarks(topic).items()}
                committed = self.admin.group_offsets(group, topic, list(ends))
                out[name] = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
        except Exception:
            self.reader.close()
            self.admin.close()
            self.admin = KafkaAdmin(self.config, timeout_s=5.0)
            self.reader = TopicReader(self.config)
            raise
        return out

    def close(self) -> None:
        self.reader.close()
        self.admin.close()


@dataclass
class LagSeries:
    samples: list[dict[str, Any]] = field(default_factory=list)  # {"at": unix, name: lag, ...}

    def peak(self) -> dict[str, int]:
        return {name: max((s[name] for s in self.samples), default=0) for name, _, _ in GROUPS}


async def sample_lag(probe: LagProbe, series: LagSeries, stop: asyncio.Event, interval: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        with contextlib.suppress(Exception):  # a broker hiccup leaves a gap, not a dead harness
            lag = await loop.run_in_executor(None, probe.lag)
            series.samples.append({"at": time.time(), **lag})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def wait_drained(probe: LagProbe, series: LagSeries, within_s: float) -> float | None:
    """Seconds until every group's lag is 0 (the pipeline caught up), or None at the timeout."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        try:
            lag = await loop.run_in_executor(None, probe.lag)
        except Exception:  # a broker just restarted: its connections come back within seconds
            await asyncio.sleep(1.0)
            continue
        series.samples.append({"at": time.time(), **lag})
        if not any(lag.values()):
            return round(time.monotonic() - started, 1)
        await asyncio.sleep(1.0)
    return None


async def stored_latencies(dsn: str, accepted: list[tuple[float, str]], within_s: float = 120) -> list[float]:
    """``stored_at - sent`` (seconds) of every accepted single-ride request, once all are stored."""
    first: dict[tuple[int, int], float] = {}
    for sent, request_id in accepted:  # a retry answers with the original id: keep the first send
        position = parse_request_id(request_id).position
        key = (position.partition, position.offset)
        first[key] = min(sent, first.get(key, sent))
    if not first:
        return []
    parts, offsets = zip(*first, strict=True)
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within_s
        while True:
            rows = await conn.fetch(
                "SELECT r.kafka_partition, r.kafka_offset, extract(epoch FROM r.stored_at)::float8 AS s"
                " FROM ride_receipts r JOIN unnest($1::int[], $2::bigint[]) AS p(part, off)"
                " ON r.kafka_partition = p.part AND r.kafka_offset = p.off",
                list(parts),
                list(offsets),
            )
            if len(rows) == len(first) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    finally:
        await conn.close()
    return [r["s"] - first[(r["kafka_partition"], r["kafka_offset"])] for r in rows]


@dataclass
class Probes:
    """Rides sent beside the load whose visibility in Elasticsearch is timed one by one."""

    api_url: str
    api_key: str
    es_url: str
    rides_prefix: str = "rides-"
    rate: float = 2.0
    sent: dict[int, float] = field(default_factory=dict)  # booking id -> send time
    seen: dict[int, float] = field(default_factory=dict)  # booking id -> first searchable
    failed: int = 0

    async def send(self, stop: asyncio.Event) -> None:
        seed = int(time.time()) % 100_000
        generator = RideGenerator(seed=seed, first_booking_id=8 * 10**12 + seed * 10**6)
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession(headers=headers) as http:
            while not stop.is_set():
                ride = generator.ride()
                sent = time.time()
                async with http.post(f"{self.api_url}/v1/rides", data=orjson.dumps(ride)) as response:
                    if response.status == 202:
                        self.sent[ride["booking_id"]] = sent
                    else:
                        self.failed += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1 / self.rate)

    async def watch(self, stop: asyncio.Event, timeout_after_stop: float = 120) -> None:
        """Poll until every probe is searchable (or ``timeout_after_stop`` after ``stop``)."""
        url = f"{self.es_url}/{self.rides_prefix}*/_search"
        stopped_at: float | None = None
        async with aiohttp.ClientSession() as http:
            while True:
                pending = [b for b in self.sent if b not in self.seen]
                if pending:
                    query = {"query": {"ids": {"values": [str(b) for b in pending]}}, "size": len(pending)}
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.post(url, json=query, params={"_source": "false"}) as response:
                            found = (await response.json()).get("hits", {}).get("hits", [])
                        now = time.time()
                        for hit in found:
                            self.seen.setdefault(int(hit["_id"]), now)
                if stop.is_set():
                    stopped_at = stopped_at or time.monotonic()
                    if not pending or time.monotonic() - stopped_at > timeout_after_stop:
                        return
                await asyncio.sleep(0.1)

    def latencies(self) -> list[float]:
        return [self.seen[b] - sent for b, sent in self.sent.items() if b in self.seen]

    def summary(self) -> dict[str, Any]:
        return {
            "probes": len(self.sent),
            "searchable": len(self.seen),
            "probe_send_failures": self.failed,
            "latency_ms": latency_summary(self.latencies()),
        }
