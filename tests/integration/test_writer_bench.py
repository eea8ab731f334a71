"""``benchmarks.writer_bench`` against the real PostgreSQL: it writes through the persister's writer,
reports a time per batch size, and leaves nothing behind in the platform's tables."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from benchmarks.writer_bench import BOOKINGS_FROM, GROUP, measure

pytestmark = pytest.mark.integration


async def leftovers(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        counts = [
            await conn.fetchval(f"SELECT count(*) FROM {table} WHERE booking_id >= $1", BOOKINGS_FROM)
            for table in ("cab_rides", "ride_versions", "ride_receipts")
        ]
        counts.append(await conn.fetchval("SELECT count(*) FROM consumer_offsets WHERE group_id = $1", GROUP))
        return counts
    finally:
        await conn.close()


def test_writer_bench_measures_and_cleans_up(stack_env: dict[str, str]) -> None:
    dsn = stack_env["XRIDES_PG_DSN"]
    results = asyncio.run(measure(dsn, [1, 20], repeats=3))
    assert [r["rides"] for r in results] == [1, 20]
    assert all(r["median_ms"] > 0 and r["us_per_ride"] > 0 for r in results)
    assert asyncio.run(leftovers(dsn)) == [0, 0, 0, 0]
