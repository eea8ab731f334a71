"""What the shared idempotency keys and rate limits cost per request (ingest_service/shared.py).

    python -m benchmarks.shared_state_bench [--calls 3000] [--concurrency 16]

Behind a balancer the API processes keep both in PostgreSQL (``XRIDES_SHARED_LIMITS=postgres``, the
cluster profile): every ride request takes tokens (``api_take_tokens``), and a request with an
``Idempotency-Key`` claims it and records its answer (``api_idempotency_begin`` + ``_finish``). This
measures those calls through the classes the API uses, as the reader role the API logs in as, one
call at a time and ``--concurrency`` at once, beside the same decisions in one process's memory.
Uses the running stack's PostgreSQL (``.stack/env``); its rows (client ``bench-shared-*``) are
deleted afterwards. Results: ``benchmarks/results/shared-state.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from benchmarks.harness.scenarios import git_commit
from ingest_service.idempotency import IdempotencyStore, StoredResponse
from ingest_service.limits import RateLimiter
from ingest_service.shared import IdempotencyKeys, RateLimits, SharedState

RESULTS = Path(__file__).resolve().parent / "results" / "shared-state.json"
BODY = orjson.dumps({"booking_id": 1, "user_id": 2})
ANSWER = StoredResponse(202, b'{"status":"Success"}')


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6, 1)

    return {
        "calls": len(ordered),
        "p50_us": at(0.5),
        "p99_us": at(0.99),
        "mean_us": round(statistics.mean(ordered) * 1e6, 1),
    }


async def timed(calls: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> dict[str, Any]:
    """``calls`` calls of ``one(i)``, ``concurrency`` at a time: per-call latency and calls/s."""
    seconds: list[float] = []
    queue = iter(range(calls))

    async def worker() -> None:
        for i in queue:
            started = time.perf_counter()
            await one(i)
            seconds.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {**summary(seconds), "concurrency": concurrency, "calls_per_s": round(calls / elapsed)}


async def measure(dsn: str, owner_dsn: str, calls: int, concurrency: int) -> dict[str, Any]:
    run = f"bench-shared-{uuid.uuid4().hex[:8]}"
    shared = SharedState(dsn, max_size=max(4, concurrency))
    opener = asyncio.create_task(shared.connect_forever(idempotency_ttl_s=3600))
    while shared.pool is None:
        await asyncio.sleep(0.05)
    limits = RateLimits(RateLimiter(rate=1e9, burst=1e9), shared)
    keys = IdempotencyKeys(IdempotencyStore(3600, 1_000_000), 3600, shared)
    local_limits = RateLimits(RateLimiter(rate=1e9, burst=1e9))
    local_keys = IdempotencyKeys(IdempotencyStore(3600, 1_000_000), 3600)

    async def take(shared_limits: RateLimits, i: int) -> None:
        await shared_limits.take(f"{run}-{i % 8}", 1)  # 8 keys' buckets, as a few clients spread

    async def claim(store: IdempotencyKeys, i: int) -> None:
        key = f"{run}-{i}"
        if await store.begin(run, key, BODY) is not None:  # a new key must be claimed, not replayed
            raise AssertionError(f"key {key} was already known")
        await store.finish(run, key, BODY, ANSWER)

    async def replay(store: IdempotencyKeys, i: int) -> None:
        answer = await store.begin(run, f"{run}-{i}", BODY)  # the key claimed above: its answer
        if answer is None or answer.status != 202:
            raise AssertionError(f"key {i} gave {answer} instead of its recorded answer")

    out: dict[str, Any] = {}
    try:
        for label, n in (("one_at_a_time", 1), ("concurrent", concurrency)):
            first = n * calls  # each pass its own keys

            def claims(i: int, first: int = first) -> Awaitable[None]:
                return claim(keys, first + i)

            def replays(i: int, first: int = first) -> Awaitable[None]:
                return replay(keys, first + i)

            out[label] = {
                "take_tokens": await timed(calls, n, lambda i: take(limits, i)),
                "idempotency_claim_and_finish": await timed(calls, n, claims),
                "idempotency_replay": await timed(calls, n, replays),
            }
        out["in_memory"] = {
            "take_tokens": await timed(calls, 1, lambda i: take(local_limits, i)),
            "idempotency_claim_and_finish": await timed(calls, 1, lambda i: claim(local_keys, i)),
        }
    finally:
        opener.cancel()
        await shared.close()
        conn = await asyncpg.connect(owner_dsn)
        try:
            await conn.execute("DELETE FROM api_idempotency WHERE client = $1", run)
            await conn.execute("DELETE FROM api_rate_buckets WHERE client LIKE $1", f"{run}-%")
        finally:
            await conn.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    reader, owner = os.environ["XRIDES_PG_READER_DSN"], os.environ["XRIDES_PG_DSN"]
    commit = git_commit()
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, the local stack on the same machine",
        "profile": os.environ.get("XRIDES_PROFILE", "single"),
        **asyncio.run(measure(reader, owner, args.calls, args.concurrency)),
    }
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    for label in ("one_at_a_time", "concurrent", "in_memory"):
        for call, figures in results[label].items():
            print(f"{label:>14} {call:<30} p50 {figures['p50_us']:>8} us  p99 {figures['p99_us']:>8} us"
                  f"  {figures['calls_per_s']:>7}/s")  # fmt: skip
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
