"""Persister benchmark: drain rate from a pre-filled topic, and POST -> stored latency under load.

    python -m benchmarks.persister_bench --rides 200000 --rate 2000 --seconds 15 [--persisters 2]

Uses the running local stack (`make up`). Phase 1 stops the launcher's persister, pre-fills the
`rides` topic with N envelopes, starts a persister and times how long it takes until every one of
them has a receipt in PostgreSQL. Phase 2 keeps that persister running, drives the API open-loop at
a constant rate, and takes each request's latency from its intended send time to its receipt's
``stored_at`` (set at the end of the batch's transaction). ``--persisters N`` runs N-1 more
persister processes in the same consumer group (Kafka spreads the partitions; one Python process
is bound to one core by the GIL). Results go to
``benchmarks/results/persister-latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from benchmarks.chaos.faults import pause
from benchmarks.harness.observe import stored_latencies
from benchmarks.harness.scenarios import STREAM_SIDE, Context, run_loadgen
from loadgen.openloop import latency_summary
from loadgen.rides import RideGenerator
from xrides.kafka import DeliveryProducer, KafkaConfig, OutRecord, TopicReader
from xrides.ride import RideEnvelope, new_version, parse_ride
from xrides.topics import RIDES

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = REPO / ".stack" / "run"


def stack(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "deploy.stack", *args], cwd=REPO, check=True, timeout=300)


# Records handed to the producer at once: well inside librdkafka's local queue (100,000 messages by
# default), so none is refused for a full queue and sent again.
PREFILL_CHUNK = 50_000


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    reader = TopicReader(KafkaConfig(bootstrap, "persister-bench"))
    try:
        return {partition: marks.high for partition, marks in reader.watermarks(topic).items()}
    finally:
        reader.close()


def prefill(bootstrap: str, count: int) -> float:
    """Write ``count`` envelopes to ``rides`` (acks=all, idempotent); records/s until all acknowledged."""
    generator = RideGenerator(seed=int(time.time()), first_booking_id=5 * 10**12 + int(time.time()))
    envelopes = [RideEnvelope(parse_ride(generator.ride()), new_version()) for _ in range(count)]
    producer = DeliveryProducer(KafkaConfig(bootstrap, "persister-bench"))
    started = time.perf_counter()
    records = [OutRecord(RIDES.name, e.encode(), key=e.key()) for e in envelopes]
    for begin in range(0, len(records), PREFILL_CHUNK):
        producer.send_all(records[begin : begin + PREFILL_CHUNK])
    elapsed = time.perf_counter() - started
    producer.close()
    return count / elapsed


async def receipts_since(pool: asyncpg.Pool, starts: dict[int, int]) -> int:
    total = 0
    for partition, offset in starts.items():
        total += await pool.fetchval(
            "SELECT count(*) FROM ride_receipts WHERE kafka_partition = $1 AND kafka_offset >= $2",
            partition,
            offset,
        )
    return int(total)


def extra_persisters(env: dict[str, str], count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "persister"],
            env={**env, "XRIDES_METRICS_PORT": str(9111 + i)},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]


async def drain(
    env: dict[str, str], count: int, extra: list[subprocess.Popen[bytes]], more: int
) -> dict[str, Any]:
    bootstrap = env["XRIDES_KAFKA_BOOTSTRAP"]
    stack("down", "--only", "persister")
    starts = end_offsets(bootstrap, RIDES.name)
    produce_rate = prefill(bootstrap, count)
    pool = await asyncpg.create_pool(env["XRIDES_PG_DSN"], min_size=1, max_size=2)
    started = time.perf_counter()
    extra += extra_persisters(env, more)  # all members join at once: one rebalance, not two
    stack("up", "--only", "persister")
    first_seen: float | None = None  # group join and partition assignment happen before this
    while (done := await receipts_since(pool, starts)) < count:
        if done and first_seen is None:
            first_seen, first_done = time.perf_counter(), done
        await asyncio.sleep(0.25)
    finished = time.perf_counter()
    await pool.close()
    steady = (count - first_done) / (finished - first_seen) if first_seen else float("nan")
    return {
        "rides": count,
        "kafka_prefill_rides_per_s": round(produce_rate),
        "drain_seconds_including_start": round(finished - started, 2),
        "persister_rows_per_s_including_start": round(done / (finished - started)),
        "persister_rows_per_s_steady": round(steady),
    }


async def end_to_end(env: dict[str, str], rate: float, seconds: float) -> dict[str, Any]:
    # The generator runs in its own process (as in `make bench`), so its CPU is not the persister's.
    load = await run_loadgen(Context(env, RUN_DIR), ((seconds, rate),), extra=())
    stored = await stored_latencies(env["XRIDES_PG_DSN"], [tuple(a) for a in load["accepted"]], within_s=60)
    return {
        "rate": rate,
        "seconds": seconds,
        "accepted": len(load["accepted"]),
        "stored": len(stored),
        "ack_latency_ms": load["latency_ms"],
        "post_to_stored_ms": latency_summary(stored),
    }


def load_env() -> dict[str, str]:
    env = dict(os.environ)
    for line in (REPO / ".stack" / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env.setdefault(key, value)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rides", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--persisters", type=int, default=1, help="persister processes in the group")
    parser.add_argument(
        "--pause-stream",
        action="store_true",
        help="SIGSTOP the Flink job and the indexer for the run: the path to PostgreSQL alone, as when"
        " the stream side has nodes of its own (otherwise it competes for the same two cores)",
    )
    args = parser.parse_args()
    env = load_env()
    extra: list[subprocess.Popen[bytes]] = []
    paused = STREAM_SIDE if args.pause_stream else ()
    for name in paused:
        pause(RUN_DIR, name)
    try:
        result = {
            "persisters": args.persisters,
            "stream_side_paused": bool(paused),
            "drain": asyncio.run(drain(env, args.rides, extra, args.persisters - 1)),
            "end_to_end": asyncio.run(end_to_end(env, args.rate, args.seconds)),
        }
    finally:
        for name in paused:
            pause(RUN_DIR, name, resume=True)
        for process in extra:
            process.terminate()
            process.wait(30)
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    (REPO / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "benchmarks" / "results" / "persister-latest.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
