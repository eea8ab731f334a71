"""``make bench``: the platform under XRides-like load, beside the limits of its parts.

    python -m benchmarks.harness                 # the full run (~25 minutes)
    python -m benchmarks.harness --quick         # a two-minute smoke run of every part
    python -m benchmarks.harness --only limits,sweep

Needs the local stack (``make up``) and reads its settings from the environment (``.stack/env``).
Writes ``benchmarks/results/<timestamp>.json`` and ``latest.json``, ``BENCHMARKS.md`` and the
plots in ``docs/img/``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import limits, report
from benchmarks.harness.scenarios import (
    CONSUMERS,
    REPO,
    STREAM_SIDE,
    Context,
    LoadScenario,
    batch_throughput,
    environ,
    git_commit,
    max_sustainable,
    run_load_scenario,
)

STEADY = 200 / 60  # XRides today: 200 rides a minute


@dataclass(frozen=True)
class Profile:
    scenarios: tuple[LoadScenario, ...]
    sweep_rates: tuple[float, ...]
    sweep_seconds: float
    ack_path_rates: tuple[float, ...]
    batch_rates: tuple[float, ...]
    batch_seconds: float
    batch_size: int
    client_rides: int
    kafka_records: int
    pg_rows: int
    es_docs: int
    drain_timeout_s: float


FULL = Profile(
    scenarios=(
        LoadScenario("steady", "XRides today: 200 rides/min for 2 minutes", ((120, STEADY),)),
        LoadScenario(
            "burst-10x",
            "10x burst: 2,000 rides/min for 5 minutes",
            ((30, STEADY), (300, 10 * STEADY), (30, STEADY)),
        ),
        LoadScenario(
            "burst-100x",
            "100x burst: 20,000 rides/min for 5 minutes",
            ((30, STEADY), (300, 100 * STEADY), (60, STEADY)),
        ),
    ),
    sweep_rates=(100, 200, 300, 400, 500, 750, 1000, 1500, 2000, 2500, 3000),
    sweep_seconds=15,
    ack_path_rates=(250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500, 3000),
    batch_rates=(2, 5, 10, 15, 20, 25, 30),
    batch_seconds=10,
    batch_size=1000,
    client_rides=200_000,
    kafka_records=300_000,
    pg_rows=200_000,
    es_docs=60_000,
    drain_timeout_s=600,
)

QUICK = Profile(
    scenarios=(
        LoadScenario("steady", "quick: 5 rides/s for 8 s", ((8, 5),)),
        LoadScenario("burst-100x", "quick: 3 s at 5/s, 8 s at 50/s, 3 s at 5/s", ((3, 5), (8, 50), (3, 5))),
    ),
    sweep_rates=(20, 50),
    sweep_seconds=4,
    ack_path_rates=(50,),
    batch_rates=(1, 2),
    batch_seconds=3,
    batch_size=200,
    client_rides=5_000,
    kafka_records=20_000,
    pg_rows=10_000,
    es_docs=4_000,
    drain_timeout_s=180,
)

PARTS = ("limits", "scenarios", "sweep", "sweep-ack-path", "sweep-durable", "batch")
PART_KEYS = {
    "limits": "limits",
    "scenarios": "scenarios",
    "sweep": "max_sustainable",
    "sweep-ack-path": "max_sustainable_ack_path",
    "sweep-durable": "max_sustainable_durable_path",
    "batch": "batch",
}


async def run(profile: Profile, parts: set[str], ctx: Context) -> dict[str, Any]:
    env = ctx.env
    results: dict[str, Any] = {
        "started_at_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "kernel": platform.release()},
    }
    if "limits" in parts:
        print("limits of the parts", flush=True)
        envelope_bytes = round(sum(len(e.encode()) for e in limits.sample_envelopes(200)) / 200)
        results["limits"] = {
            "kafka": limits.kafka_producer_limit(
                REPO / ".stack" / "bin" / "kafka-run-class",
                env["XRIDES_KAFKA_BOOTSTRAP"],
                profile.kafka_records,
                envelope_bytes,
                int(env.get("XRIDES_RIDES_PARTITIONS", "6")),
            ),
            "postgres": await limits.postgres_copy_limit(env["XRIDES_PG_DSN"], profile.pg_rows),
            "elasticsearch": await limits.elasticsearch_bulk_limit(env["XRIDES_ES_URL"], profile.es_docs),
        }
        print(f"  {results['limits']}", flush=True)
    if "scenarios" in parts:
        results["scenarios"] = []
        for scenario in profile.scenarios:
            print(f"scenario {scenario.name}: {scenario.description}", flush=True)
            started = time.monotonic()
            outcome = await run_load_scenario(ctx, scenario)
            results["scenarios"].append(outcome)
            ack_p99, stored_p99 = outcome["ack_latency_ms"]["p99"], outcome["e2e_postgres_ms"].get("p99")
            print(
                f"  accepted {outcome['rides_accepted']}, unexpected {outcome['unexpected_answers']}, "
                f"ack p99 {ack_p99} ms, stored p99 {stored_p99} ms, caught up after "
                f"{outcome['catch_up_seconds_after_load']} s ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    if "sweep" in parts:
        print("maximum sustainable single-ride rate", flush=True)
        results["max_sustainable"] = await max_sustainable(
            ctx, profile.sweep_rates, profile.sweep_seconds, 25.0
        )
    if "sweep-ack-path" in parts:
        print(
            "maximum sustainable single-ride rate of the API and Kafka alone (consumers paused)", flush=True
        )
        results["max_sustainable_ack_path"] = await max_sustainable(
            ctx, profile.ack_path_rates, profile.sweep_seconds, 25.0, paused=CONSUMERS
        )
    if "sweep-durable" in parts:
        print("maximum sustainable single-ride rate to PostgreSQL (stream side paused)", flush=True)
        results["max_sustainable_durable_path"] = await max_sustainable(
            ctx, profile.ack_path_rates, profile.sweep_seconds, None, paused=STREAM_SIDE, stored_p99_ms=250.0
        )
    if "batch" in parts:
        print("batch endpoint throughput", flush=True)
        results["batch"] = await batch_throughput(
            ctx, profile.batch_rates, profile.batch_seconds, profile.batch_size, profile.client_rides
        )
    results.update(report.headline(results, "burst-100x"))
    return results


def _cpus() -> int:
    import os  # noqa: PLC0415

    return len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run of every part (a smoke test)")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--plots", type=Path, default=REPO / "docs" / "img")
    parser.add_argument(
        "--merge", action="store_true", help="re-run only --only's parts and keep the rest of latest.json"
    )
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    if unknown := parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    profile = QUICK if args.quick else FULL
    ctx = Context(env=environ(), run_dir=REPO / ".stack" / "run", drain_timeout_s=profile.drain_timeout_s)
    results = asyncio.run(run(profile, parts, ctx))
    results["profile"] = "quick" if args.quick else "full"
    if args.merge:  # the earlier run's other parts, with the commits each part was measured at
        earlier = orjson.loads((args.results / "latest.json").read_bytes())
        commits = earlier.get("part_commits") or dict.fromkeys(PART_KEYS, earlier["git_commit"])
        for part, key in PART_KEYS.items():
            if part in parts:
                commits[part] = results["git_commit"]
            elif key in earlier:
                results[key] = earlier[key]
        results["part_commits"] = commits
        results["merged_into"] = earlier["started_at_utc"]
        results.update(report.headline(results, "burst-100x"))
    path = report.write(results, args.results)
    args.markdown.write_text(report.markdown(results))
    written = report.plots(results, args.plots, "burst-100x")
    print(f"results: {path} (and latest.json), {args.markdown}, plots: {', '.join(map(str, written))}")
    for key, label in report.HEADLINE:
        print(f"  {label}: {results.get(key)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
