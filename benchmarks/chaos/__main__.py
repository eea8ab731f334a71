"""``make chaos``: faults under steady load, then proof that nothing acknowledged was lost.

    python -m benchmarks.chaos                      # every scenario (~35 minutes)
    python -m benchmarks.chaos --quick              # the persister and the API (~3 minutes)
    python -m benchmarks.chaos --only kill-kafka,pause-postgres

For each scenario the open-loop generator (``loadgen.openloop``, its own process) sends single
rides at a steady rate with 5% updates (cancellations of earlier bookings) and 1% invalid rides;
the fault strikes after a few seconds; the parts come back through the launcher; once every
consumer group has caught up, ``verify`` checks PostgreSQL, Elasticsearch and tracking against
every answer the generator got. Results: ``benchmarks/results/chaos-latest.json`` and the table
in ``docs/reliability.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks.chaos import faults, verify
from benchmarks.harness.observe import LagProbe, LagSeries, sample_lag, wait_drained
from benchmarks.harness.scenarios import REPO, git_commit


@dataclass(frozen=True)
class Scenario:
    name: str
    targets: tuple[str, ...]
    action: str = "kill"  # "kill" = SIGKILL, down for a while, restart; "pause" = SIGSTOP, SIGCONT


SCENARIOS = (
    Scenario("kill-api", ("api",)),
    Scenario("kill-persister", ("persister",)),
    Scenario("kill-flink-job", ("flink-job",)),
    Scenario("kill-es-indexer", ("es-indexer",)),
    Scenario("kill-archiver", ("archiver",)),
    Scenario("kill-kafka", ("kafka",)),
    Scenario("kill-postgres", ("postgres",)),
    Scenario("kill-elasticsearch", ("elasticsearch",)),
    Scenario("kill-s3", ("s3",)),
    Scenario("kill-persister-and-kafka", ("persister", "kafka")),
    Scenario("kill-api-and-postgres", ("api", "postgres")),
    Scenario("pause-postgres", ("postgres",), action="pause"),
)
QUICK = ("kill-persister", "kill-api", "kill-kafka")
FAULT_NAMES = {"kill": "SIGKILL + restart", "pause": "SIGSTOP, then SIGCONT"}


@dataclass(frozen=True)
class Timing:
    rate: float
    seconds: float
    fault_at: float
    down_for: float
    recover_within: float


FULL_TIMING = Timing(rate=100, seconds=40, fault_at=10, down_for=8, recover_within=600)
QUICK_TIMING = Timing(rate=40, seconds=30, fault_at=4, down_for=4, recover_within=300)


async def run_scenario(scenario: Scenario, timing: Timing, env: dict[str, str]) -> dict[str, Any]:
    run_dir = REPO / ".stack" / "run"
    healed = await faults.heal(env)
    lag_probe = LagProbe(env["XRIDES_KAFKA_BOOTSTRAP"])
    sampler_probe = LagProbe(env["XRIDES_KAFKA_BOOTSTRAP"])
    lag, during = LagSeries(), LagSeries()
    sampling = asyncio.Event()
    sampler: asyncio.Task[None] | None = None
    try:
        await wait_drained(lag_probe, lag, timing.recover_within)  # start from a quiet pipeline
        before = faults.running(run_dir)
        sampler = asyncio.create_task(sample_lag(sampler_probe, during, sampling, interval=0.5))
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            load = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "loadgen.openloop",
                "--rate", f"{timing.rate:g}", "--seconds", f"{timing.seconds:g}",
                "--updates", "0.05", "--invalid", "0.01", "--record-outcomes", "--out", out.name,
                cwd=REPO, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await asyncio.sleep(timing.fault_at)
            struck = time.monotonic()
            struck_wall = time.time()
            for target in scenario.targets:
                if scenario.action == "pause":
                    faults.pause(run_dir, target)
                else:
                    faults.kill(run_dir, target)
            await asyncio.sleep(timing.down_for)
            restarting = time.monotonic()
            restarting_wall = time.time()
            if scenario.action == "pause":
                for target in scenario.targets:
                    faults.pause(run_dir, target, resume=True)
            else:
                await faults.restart(list(scenario.targets), env)
            restarted = time.monotonic()
            restarted_wall = time.time()
            _, stderr = await load.communicate()
            if load.returncode not in (0, 1):
                raise RuntimeError(f"load generator failed: {stderr.decode()[-800:]}")
            load_ended = time.time()
            caught_up = await wait_drained(lag_probe, lag, timing.recover_within)
            crashed = faults.crashed(before, faults.running(run_dir), scenario.targets)
            out.seek(0)
            outcomes = [tuple(o) for o in orjson.loads(out.read())["outcomes"]]
    finally:
        sampling.set()
        if sampler is not None:
            await sampler
        lag_probe.close()
        sampler_probe.close()
    # Recovered: the part is back (the restart returned healthy) and every consumer group is within
    # two seconds of traffic of the head again, while the load still runs.
    threshold = 2 * timing.rate
    back = next(
        (
            sample["at"]
            for sample in during.samples
            if sample["at"] >= restarting_wall + (restarted - restarting)
            and all(sample[name] <= threshold for name in ("persister", "flink-job", "es-indexer"))
        ),
        None,
    )
    if back is None and caught_up is not None:  # only once the load had ended
        back = load_ended + caught_up
    expected, without_receipt = await verify.expected_versions(env["XRIDES_PG_DSN"], outcomes)
    postgres = await verify.check_postgres(env["XRIDES_PG_DSN"], expected)
    elastic = await verify.check_elasticsearch(
        env["XRIDES_ES_URL"], env.get("XRIDES_ES_RIDES_PREFIX", "rides-"), expected
    )
    tracking = await verify.check_tracking(env["XRIDES_API_URL"], env["XRIDES_API_KEY"], outcomes, 300)
    answers = verify.summarise_answers(outcomes)
    return {
        "name": scenario.name,
        "fault": f"{FAULT_NAMES[scenario.action]} of {', '.join(scenario.targets)}",
        "rate_per_s": timing.rate,
        **{k: answers[k] for k in ("sent", "acknowledged", "refused", "hung", "invalid_refused")},
        "statuses": answers["statuses"],
        "bookings_acknowledged": len(expected),
        "stored": postgres["stored"],
        "duplicated": postgres["duplicated"],
        "lost": postgres["lost"],
        "wrong_version": postgres["wrong_version"],
        "acknowledged_without_receipt": without_receipt,
        "crashed": crashed,  # parts the fault did not strike that died anyway
        "elasticsearch": elastic,
        "tracking": tracking,
        "down_seconds": round(restarting - struck, 1),
        "restart_seconds": round(restarted - restarting, 1),
        # from the end of the fault (restart issued, or SIGCONT) until healthy and caught up
        "time_to_recover_s": round(back - restarting_wall, 1) if back is not None else None,
        "caught_up_after_load_s": caught_up,
        # the service works again without anyone restarting it (the API after a broker restart)
        "acknowledged_after_restart": sum(1 for o in outcomes if o[3] == "202" and o[0] >= restarted_wall),
        "peak_lag_during": during.peak(),
        "fault_at_unix": round(struck_wall, 1),
        "unhealthy_before": healed,
        "lost_examples": postgres["lost_examples"],
    }


def table(results: dict[str, Any]) -> str:
    head = (
        "| Scenario | Sent | Acknowledged | Refused | Hung | Stored | Duplicated | Lost | Older version won |"
        " In Elasticsearch (missing / duplicated) | Tracking wrong | Restart (s) | Recovered in (s) |"
        " Other parts crashed |"
    )
    lines = [head, "|" + "---|" * 14]
    for s in results["scenarios"]:
        es, tracking = s["elasticsearch"], s["tracking"]
        cells = [
            s[k] for k in ("name", "sent", "acknowledged", "refused", "hung", "stored", "duplicated", "lost")
        ]
        cells += [s["wrong_version"], f"{es['indexed']} ({es['missing']} / {es['duplicated']})"]
        cells += [
            f"{tracking['wrong']} of {tracking['checked']}",
            s["restart_seconds"],
            s["time_to_recover_s"],
            ", ".join(s.get("crashed", [])) or "none",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def update_reliability_doc(results: dict[str, Any], doc: Path) -> None:
    begin, end = "<!-- chaos:begin -->", "<!-- chaos:end -->"
    text = doc.read_text()
    if begin not in text or end not in text:
        return
    block = (
        f"{begin}\nMeasured at commit `{results['git_commit']}` on {results['started_at_utc']}"
        f" ({results['profile']} profile):\n\n{table(results)}\n{end}"
    )
    doc.write_text(text[: text.index(begin)] + block + text[text.index(end) + len(end) :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, shorter")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "chaos-latest.json")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else (QUICK if args.quick else [s.name for s in SCENARIOS])
    chosen = [s for s in SCENARIOS if s.name in names]
    if len(chosen) != len(names):
        parser.error(f"unknown scenarios; known: {', '.join(s.name for s in SCENARIOS)}")
    timing = QUICK_TIMING if args.quick else FULL_TIMING
    env = dict(os.environ)
    results: dict[str, Any] = {
        "started_at_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "profile": "quick" if args.quick else "full",
        "scenarios": [],
    }
    for scenario in chosen:
        print(f"{scenario.name}: {scenario.action} {', '.join(scenario.targets)}", flush=True)
        outcome = asyncio.run(run_scenario(scenario, timing, env))
        results["scenarios"].append(outcome)
        figures = ("sent", "acknowledged", "refused", "hung", "stored", "duplicated", "lost", "wrong_version")
        print("  " + ", ".join(f"{k} {outcome[k]}" for k in figures), end="")
        missing, recovered = outcome["elasticsearch"]["missing"], outcome["time_to_recover_s"]
        print(f", ES missing {missing}, recovered in {recovered} s, crashed {outcome['crashed'] or 'none'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    if args.doc.exists() and not args.only:
        update_reliability_doc(results, args.doc)
    print(table(results))
    bad = [
        s["name"]
        for s in results["scenarios"]
        if s["lost"]
        or s["duplicated"]
        or s["wrong_version"]
        or s["hung"]
        or s["elasticsearch"]["missing"]
        or s["elasticsearch"]["duplicated"]
        or s["tracking"]["wrong"]
        or s["time_to_recover_s"] is None
        or s["crashed"]
    ]
    if bad:
        print(f"FAILED: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
