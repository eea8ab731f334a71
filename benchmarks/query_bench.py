"""Query DSL benchmark: p50 / p99 of every documented example on each engine, and through the query
service, over N synthetic rides.

    python -m benchmarks.query_bench --rides 10000000 --days 35 --repeat 10 --out query-10m.json
    python -m benchmarks.query_bench --skip-load --repeat 10 --out query-10m.json   # measure again
    python -m benchmarks.query_bench --drop                                          # delete the rides

Uses the running local stack (`make up`). The rides come from ``loadgen.synthetic`` (the load
generator's Bangalore mix, booking times uniform over ``--days`` days before now, 60% with a
drop-off time), written to their own table (``bench_query.cab_rides``, monthly partitioning and the
platform's indices on ``from_date`` and ``booking_created``), daily indices (``benchrides-*``, the
Flink job's template and ``enrich``) and Parquet files (``s3://xrides-archive/bench/rides/dt=*``), so
the platform's data is untouched; the load time of each store is measured and reported. Every
example runs once cold, then ``--repeat`` times per engine in process (``QueryEngine``), then the
same through a query service process (``python -m query_service`` on its own port, HTTP, backend
``auto``). Reported per example and engine: rows, the cold run, p50 and p99 of the repeats (with 10
repeats p99 is their maximum: say so when quoting it), PostgreSQL's EXPLAIN cost, whether the answer
equals PostgreSQL's within the columns' exactness, or the 4xx an engine gave and why. Elasticsearch's
shard request cache is off, so repeats compute their aggregations; cost limits are lifted (the
estimates are recorded instead), the scan limit for customer fields is the service's default.
Results go to ``benchmarks/results/<--out>``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.query_oracle import first_difference
from loadgen.synthetic import drop_all, iter_rides, load_all
from query_dsl import QueryEngine, QuerySettings, parse_document, plan_query
from query_dsl.backends import Backend
from query_dsl.cost import pg_total_cost
from query_dsl.plan import Plan
from query_dsl.result import Result
from xrides.errors import XRidesError
from xrides.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "docs" / "query-examples").glob("*.json"))
ENGINES: tuple[Backend, ...] = ("postgres", "elasticsearch", "archive")
NAMES = {
    "query_pg_table": "bench_query.cab_rides",
    "es_rides_prefix": "benchrides-",
    "archive_prefix": "bench/rides",
}


def bench_settings() -> QuerySettings:
    return dataclasses.replace(
        load_settings(QuerySettings),
        query_pg_table=NAMES["query_pg_table"],
        es_rides_prefix=NAMES["es_rides_prefix"],
        archive_prefix=NAMES["archive_prefix"],
        query_timeout_s=300.0,
        query_es_request_cache=False,
        query_pg_max_cost=1e15,
        query_es_max_groups=10_000_000,
        query_archive_max_bytes=10**15,
        query_freshness=False,
    )


async def load(settings: QuerySettings, rides: int, days: float, now: datetime) -> dict[str, float]:
    """Generate and write chunk by chunk: generation time is what is left of the total."""
    started = time.perf_counter()
    timings = await load_all(settings, iter_rides(rides, now, days, chunk=100_000))
    total = time.perf_counter() - started
    timings["generate_and_parse_s"] = round(total - sum(timings.values()), 1)
    timings["total_s"] = round(total, 1)
    return timings


def percentile(values: list[float], p: float) -> float:
    """Nearest rank (with 10 samples, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def _timed(
    engine: QueryEngine, plan: Plan, backend: str, now: datetime
) -> tuple[float, Result | XRidesError]:
    started = time.perf_counter()
    try:
        result: Result | XRidesError = await engine.run(plan, backend, now)
    except XRidesError as error:  # a 4xx (a documented limit) is a result here, not a crash
        result = error
    return (time.perf_counter() - started) * 1000, result


async def _pg_cost(engine: QueryEngine, plan: Plan) -> float | None:
    try:
        compiled = engine._pg_statement(plan, plan.range, True)
        return round(pg_total_cost(await engine._postgres(compiled, explain=True)))
    except XRidesError:
        return None


async def measure(settings: QuerySettings, repeat: int, now: datetime) -> list[dict[str, Any]]:
    engine = QueryEngine(settings)
    rows: list[dict[str, Any]] = []
    try:
        for example in EXAMPLES:
            query, params = parse_document(example.read_text())
            plan = plan_query(query, params, now, settings.limits)
            reference: Result | None = None
            cost = await _pg_cost(engine, plan)
            for backend in ENGINES:
                first, result = await _timed(engine, plan, backend, now)  # the cold run also warms caches
                times = []
                for _ in range(repeat if isinstance(result, Result) else 0):
                    elapsed, result = await _timed(engine, plan, backend, now)
                    times.append(elapsed)
                row = _row(example.stem, backend, first, times, result, reference)
                if backend == "postgres":
                    row["pg_cost"] = cost
                    reference = result if isinstance(result, Result) else None
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        await engine.close()
    return rows


def _row(
    example: str, backend: str, first: float, times: list[float], result: Any, reference: Result | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"example": example, "backend": backend, "first_ms": round(first, 1)}
    if isinstance(result, XRidesError):
        row["refused"] = f"{result.http_status} {result.code}: {result.message[:240]}"
        return row
    row.update(
        rows=len(result.rows),
        p50_ms=round(percentile(times, 50), 1),
        p99_ms=round(percentile(times, 99), 1),
        runs=len(times),
    )
    if reference is not None and backend != "postgres":
        row["same_as_postgres"] = not first_difference(reference, result)
    return row


# Through the query service ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_service(settings: QuerySettings, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, **{f"XRIDES_{k.upper()}": str(v) for k, v in dataclasses.asdict(settings).items()}}
    env.update({"XRIDES_QUERY_PORT": str(port), "XRIDES_API_KEY": key, "XRIDES_QUERY_MAX_CONCURRENT": "2"})
    logs = REPO / ".stack" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "query-bench-service.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "query_service"], env=env, cwd=REPO, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1):  # noqa: S310 - http to our own process
                return proc, base
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the query service did not start (see .stack/logs/query-bench-service.log)")


def _post(url: str, body: bytes, key: str) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 - http to our own process
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def measure_service(settings: QuerySettings, repeat: int) -> list[dict[str, Any]]:
    """Every example through the query service over HTTP (backend auto), as clients run them."""
    key = f"bench-{os.getpid()}-{time.time_ns()}"
    proc, base = _start_service(settings, key)
    out = []
    try:
        for example in EXAMPLES:
            body = example.read_bytes()
            times = []
            status, answer = 0, dict[str, Any]()
            for _ in range(repeat + 1):
                started = time.perf_counter()
                status, answer = _post(f"{base}/v1/query?backend=auto", body, key)
                times.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    break
            row: dict[str, Any] = {
                "example": example.stem,
                "backend": f"service:{answer.get('backend', '?')}",
            }
            row["first_ms"] = round(times[0], 1)
            if status != 200:
                row["refused"] = (
                    f"{status} {answer.get('error_code')}: {str(answer.get('error_message'))[:240]}"
                )
            else:
                row.update(rows=len(answer["rows"]), p50_ms=round(percentile(times[1:], 50), 1),
                           p99_ms=round(percentile(times[1:], 99), 1), runs=len(times) - 1)  # fmt: skip
            out.append(row)
            print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rides", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=35)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--skip-load", action="store_true", help="reuse the rides of the last run")
    parser.add_argument("--no-service", action="store_true", help="skip the runs through the query service")
    parser.add_argument("--drop", action="store_true", help="delete the benchmark's rides and exit")
    parser.add_argument("--load-only", action="store_true", help="load the rides and stop (measure later)")
    parser.add_argument("--out", default="query-latest.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    settings = bench_settings()
    if args.drop:
        asyncio.run(drop_all(settings))
        return
    results_path = REPO / "benchmarks" / "results" / args.out
    now = datetime.now(UTC)
    report: dict[str, Any] = {}
    if args.skip_load and results_path.exists():
        report = json.loads(results_path.read_text())
        now = datetime.fromisoformat(report["now"])
    else:
        report = {"rides": args.rides, "days": args.days, "now": now.isoformat()}
        report["load"] = asyncio.run(load(settings, args.rides, args.days, now))
        print("load:", report["load"], flush=True)
        results_path.write_text(json.dumps(report, indent=2) + "\n")  # the load survives a failed measurement
        if args.load_only:
            return
    report["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, the whole local stack on the same machine"
    )
    report["repeat"] = args.repeat
    report["measured_at"] = datetime.now(UTC).isoformat()
    report["latency"] = asyncio.run(measure(settings, args.repeat, now))
    if not args.no_service:
        report["service"] = measure_service(settings, args.repeat)
    results_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {results_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
