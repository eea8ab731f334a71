"""The persister's PostgreSQL side alone: how long one ``RideWriter.write`` takes by batch size.

    python -m benchmarks.writer_bench [--sizes 1,100,5000] [--repeats 30]

Uses the running local stack's PostgreSQL server (`make up`), in a database of its own
(``xrides_writer_bench``, created, migrated and dropped around the run): the platform's rides are
never touched. Rides come from the load generator, encoded and decoded as the persister would.
The fixed part of a batch (transaction, statements, commit) is what a small batch costs; the
per-row part is what a large one does. Kafka is not involved: ``persister_bench`` measures the whole path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from loadgen.rides import RideGenerator
from persister.sink import decode
from persister.writer import Message, RideWriter
from xrides.db.scratch import scratch_database
from xrides.kafka import Record
from xrides.ride import RideEnvelope, new_version, parse_ride

DATABASE = "xrides_writer_bench"
GROUP, TOPIC, PARTITION = "writer-bench", "rides-writer-bench", 0


def batch(generator: RideGenerator, first_offset: int, size: int) -> list[Message]:
    messages = []
    for index in range(size):
        envelope = RideEnvelope(ride=parse_ride(generator.ride()), version=new_version(), source="bench")
        messages.append(decode(Record(TOPIC, PARTITION, first_offset + index, None, envelope.encode())))
    return messages


async def measure(owner_dsn: str, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    """Median write time per batch size, in a scratch database (the schema owner's DSN creates it)."""
    async with scratch_database(owner_dsn, DATABASE) as dsn:
        return await _measure(dsn, sizes, repeats)


async def _measure(dsn: str, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    writer = RideWriter(dsn, GROUP)
    generator = RideGenerator(seed=11)
    offset = 0
    results = []
    try:
        for size in sizes:
            times = []
            for _ in range(repeats if size < 1000 else max(3, repeats // 5)):
                messages = batch(generator, offset, size)
                offset += size
                started = time.perf_counter()
                await writer.write(TOPIC, messages, {PARTITION: offset})
                times.append((time.perf_counter() - started) * 1000)
            median = statistics.median(times)
            results.append(
                {"rides": size, "median_ms": round(median, 2), "us_per_ride": round(median * 1000 / size)}
            )
    finally:
        await writer.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1,100,5000", help="comma-separated batch sizes")
    parser.add_argument(
        "--repeats", type=int, default=30, help="batches per size (a fifth for 1,000 and more)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for row in asyncio.run(measure(os.environ["XRIDES_PG_DSN"], sizes, args.repeats)):
        rides, median, per_ride = row["rides"], row["median_ms"], row["us_per_ride"]
        print(f"batch of {rides:>5} rides: median {median:8.2f} ms, {per_ride:>6} us per ride")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
