"""Query DSL benchmark: latency of every documented example on each backend over N synthetic rides.

    python benchmarks/query_bench.py --rides 1000000 --days 30 --repeat 5 [--skip-load]

Uses the running local stack (`make up`). The rides come from ``loadgen.synthetic`` (the load
generator's Bangalore mix, booking times uniform over ``--days`` days before now, 60% with a
drop-off time), written to their own table (``bench_query.cab_rides``, monthly partitioning as in
the system of record), daily indices (``benchrides-*``, the Flink job's template and ``enrich``)
and Parquet files (``s3://xrides-archive/bench/rides/dt=*``), so the platform's data is untouched.
Each example runs once to warm up, then ``--repeat`` times per backend; the median and the slowest
run are reported, with the first (cold) run, whether the answer equals PostgreSQL's, and the load
times. Elasticsearch's shard request cache is off, so repeated runs compute their aggregations.
Results go to ``benchmarks/results/<--out>``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadgen.synthetic import iter_rides, load_all
from query_dsl import QueryEngine, QuerySettings, parse_document, plan_query
from query_dsl.result import Result
from xrides.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "docs" / "query-examples").glob("*.json"))
BACKENDS = ("postgres", "elasticsearch", "archive")


def bench_settings() -> QuerySettings:
    return dataclasses.replace(
        load_settings(QuerySettings),
        query_pg_table="bench_query.cab_rides",
        es_rides_prefix="benchrides-",
        archive_prefix="bench/rides",
        query_timeout_s=120.0,
        query_es_request_cache=False,
    )


async def load(settings: QuerySettings, rides: int, days: float, now: datetime) -> dict[str, float]:
    """Generate and write chunk by chunk: generation time is what is left of the total."""
    started = time.perf_counter()
    timings = await load_all(settings, iter_rides(rides, now, days, chunk=100_000))
    timings["generate_and_parse_s"] = round(time.perf_counter() - started - sum(timings.values()), 1)
    return timings


def _agree(reference: Result, other: Result) -> bool:
    """Exact columns equal (floats to 1e-9), approximate ones within their tolerance."""
    if len(reference.rows) != len(other.rows):
        return False
    for want, got in zip(reference.rows, other.rows, strict=True):
        for column, a, b in zip(other.columns, want, got, strict=True):
            if a == b:
                continue
            numbers = isinstance(a, int | float) and isinstance(b, int | float)
            if not numbers or not math.isclose(a, b, rel_tol=max(column.tolerance, 1e-9)):
                return False
    return True


async def measure(settings: QuerySettings, repeat: int, now: datetime) -> list[dict[str, Any]]:
    engine = QueryEngine(settings)
    rows: list[dict[str, Any]] = []
    try:
        for example in EXAMPLES:
            query, params = parse_document(example.read_text())
            plan = plan_query(query, params, now, settings.limits)
            results: dict[str, Result] = {}
            for backend in BACKENDS:
                started = time.perf_counter()
                result = await engine.run(plan, backend, now)  # the first run also warms caches
                first = (time.perf_counter() - started) * 1000
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    result = await engine.run(plan, backend, now)
                    times.append((time.perf_counter() - started) * 1000)
                rows.append(
                    {
                        "example": example.stem,
                        "backend": backend,
                        "rows": len(result.rows),
                        "first_ms": round(first, 1),
                        "median_ms": round(statistics.median(times), 1),
                        "max_ms": round(max(times), 1),
                    }
                )
                results[backend] = result
                last = rows[-1]
                last["same_as_postgres"] = _agree(results["postgres"], result)
                same = last["same_as_postgres"]
                print(f"{example.stem:48} {backend:14} {last['median_ms']:9.1f} ms, same: {same}")
    finally:
        await engine.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rides", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-load", action="store_true", help="reuse the rides of the last run")
    parser.add_argument("--out", default="query-latest.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    settings = bench_settings()
    results_path = REPO / "benchmarks" / "results" / args.out
    now = datetime.now(UTC)
    report: dict[str, Any] = {}
    if args.skip_load and results_path.exists():
        report = json.loads(results_path.read_text())
        now = datetime.fromisoformat(report["now"])
    else:
        report = {"rides": args.rides, "days": args.days, "now": now.isoformat()}
        report["load"] = asyncio.run(load(settings, args.rides, args.days, now))
        print("load:", report["load"])
    report["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, the whole local stack on the same machine"
    )
    report["repeat"] = args.repeat
    report["latency"] = asyncio.run(measure(settings, args.repeat, now))
    results_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {results_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
