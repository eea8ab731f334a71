"""``benchmarks.writer_bench`` against the real PostgreSQL: it writes through the persister's writer
in a database of its own, reports a time per batch size, and leaves nothing behind."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from benchmarks.writer_bench import DATABASE, measure

pytestmark = pytest.mark.integration


async def databases(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


def test_writer_bench_measures_in_its_own_database(stack_env: dict[str, str]) -> None:
    dsn = stack_env["XRIDES_PG_DSN"]
    results = asyncio.run(measure(dsn, [1, 20], repeats=3))
    assert [r["rides"] for r in results] == [1, 20]
    assert all(r["median_ms"] > 0 and r["us_per_ride"] > 0 for r in results)
    assert DATABASE not in asyncio.run(databases(dsn))  # dropped at the end
