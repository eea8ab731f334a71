"""``make chaos``: faults under steady load, then proof that nothing acknowledged was lost.

    python -m benchmarks.chaos                      # every scenario (~35 minutes)
    python -m benchmarks.chaos --quick              # the persister and the API (~3 minutes)
    python -m benchmarks.chaos --only kill-kafka,pause-postgres
    python -m benchmarks.chaos --profile cluster    # the cluster profile's faults (make cluster-up)

For each scenario the open-loop generator (``loadgen.openloop``, its own process) sends single
rides at a steady rate with 5% updates (cancellations of earlier bookings) and 1% invalid rides;
the fault strikes after a few seconds; the parts come back through the launcher; once every
consumer group has caught up, ``verify`` checks PostgreSQL, Elasticsearch and tracking against
every answer the generator got. Results: ``benchmarks/results/chaos-latest.json`` and the table
in ``docs/reliability.md``.

On the cluster profile (``--profile cluster``) the faults are the ones a cluster must absorb: the
Kafka broker leading most partitions of ``rides``, a Flink TaskManager (the job restarts from its
S3 checkpoint), the JobManager (the supervisor resubmits the job from the newest retained
checkpoint), an Elasticsearch node, one API process behind HAProxy, and the PostgreSQL replica
(tracking reads fall back to the primary). Results: ``chaos-cluster-latest.json``.
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
LEADER = "kafka-leader"  # resolved when the fault strikes: the broker leading most rides partitions
CLUSTER_SCENARIOS = (
    Scenario("kill-broker-leader", (LEADER,)),
    Scenario("kill-taskmanager", ("flink-taskmanager-1",)),
    Scenario("kill-jobmanager", ("flink-jobmanager",)),
    Scenario("kill-es-node", ("elasticsearch-2",)),
    Scenario("kill-api-process", ("api-1",)),
    Scenario("kill-pg-replica", ("postgres-replica",)),
)
FAULT_NAMES = {"kill": "SIGKILL + restart", "pause": "SIGSTOP, then SIGCONT"}


@dataclass(frozen=True)
class Timing:
    rate: float
    seconds: float
    fault_at: float
    down_for: float
    recover_within: float


FULL_TIMING = Timing(rate=100, seconds=40, fault_at=10, down_for=8, recover_within=600)
CLUSTER_TIMING = Timing(rate=60, seconds=60, fault_at=10, down_for=10, recover_within=600)
QUICK_TIMING = Timing(rate=40, seconds=30, fault_at=4, down_for=4, recover_within=300)


@dataclass
class Timeline:
    """When the fault struck, when the restart was issued, and when it returned (monotonic and wall)."""

    struck: float = 0.0
    struck_wall: float = 0.0
    restarting: float = 0.0
    restarting_wall: float = 0.0
    restarted: float = 0.0
    restarted_wall: float = 0.0


async def strike(
    scenario: Scenario, targets: tuple[str, ...], timing: Timing, env: dict[str, str]
) -> Timeline:
    """The fault itself: SIGKILL (or SIGSTOP) of every target, down for a while, then back."""
    run_dir = faults.stack_dir(env) / "run"
    t = Timeline(struck=time.monotonic(), struck_wall=time.time())
    for target in targets:
        if scenario.action == "pause":
            faults.pause(run_dir, target)
        else:
            faults.kill(run_dir, target)
    await asyncio.sleep(timing.down_for)
    t.restarting, t.restarting_wall = time.monotonic(), time.time()
    if scenario.action == "pause":
        for target in targets:
            faults.pause(run_dir, target, resume=True)
    else:
        await faults.restart(list(targets), env)
    t.restarted, t.restarted_wall = time.monotonic(), time.time()
    return t


async def run_scenario(scenario: Scenario, timing: Timing, env: dict[str, str]) -> dict[str, Any]:
    run_dir = faults.stack_dir(env) / "run"
    healed = await faults.heal(env)
    reads = faults.ReadProbe(env["XRIDES_API_URL"], env["XRIDES_API_KEY"])
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
            bootstrap = env["XRIDES_KAFKA_BOOTSTRAP"]
            targets = tuple(faults.kafka_leader(bootstrap) if t == LEADER else t for t in scenario.targets)
            await reads.start()
            timeline = await strike(scenario, targets, timing, env)
            _, stderr = await load.communicate()
            if load.returncode not in (0, 1):
                raise RuntimeError(f"load generator failed: {stderr.decode()[-800:]}")
            load_ended = time.time()
            caught_up = await wait_drained(lag_probe, lag, timing.recover_within)
            read_probe = await reads.stop()
            crashed = faults.crashed(before, faults.running(run_dir), targets)
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
            if sample["at"] >= timeline.restarted_wall
            and all(sample[name] <= threshold for name in ("persister", "flink-job", "es-indexer"))
        ),
        None,
    )
    if back is None and caught_up is not None:  # only once the load had ended
        back = load_ended + caught_up
    return {
        "name": scenario.name,
        "fault": f"{FAULT_NAMES[scenario.action]} of {', '.join(targets)}",
        "rate_per_s": timing.rate,
        **await verdict(env, outcomes),
        "crashed": crashed,  # parts the fault did not strike that died anyway
        "down_seconds": round(timeline.restarting - timeline.struck, 1),
        "restart_seconds": round(timeline.restarted - timeline.restarting, 1),
        # from the end of the fault (restart issued, or SIGCONT) until healthy and caught up
        "time_to_recover_s": round(back - timeline.restarting_wall, 1) if back is not None else None,
        "caught_up_after_load_s": caught_up,
        # the service works again without anyone restarting it (the API after a broker restart)
        "acknowledged_after_restart": sum(
            1 for o in outcomes if o[3] == "202" and o[0] >= timeline.restarted_wall
        ),
        "peak_lag_during": during.peak(),
        "fault_at_unix": round(timeline.struck_wall, 1),
        "unhealthy_before": healed,
        # tracking reads (GET /v1/requests/<id> of a stored ride) issued twice a second through the fault
        "reads_during_fault": read_probe,
    }


async def verdict(env: dict[str, str], outcomes: list[Any]) -> dict[str, Any]:
    """Every acknowledged ride checked in PostgreSQL, Elasticsearch and tracking; the answers the
    clients got; and the Flink job as it runs now (on a session cluster)."""
    expected, without_receipt = await verify.expected_versions(env["XRIDES_PG_DSN"], outcomes)
    postgres = await verify.check_postgres(env["XRIDES_PG_DSN"], expected)
    elastic = await verify.check_elasticsearch(
        env["XRIDES_ES_URL"], env.get("XRIDES_ES_RIDES_PREFIX", "rides-"), expected
    )
    tracking = await verify.check_tracking(env["XRIDES_API_URL"], env["XRIDES_API_KEY"], outcomes, 300)
    answers = verify.summarise_answers(outcomes)
    failed = [o[0] for o in outcomes if o[3] not in ("202", "422")]
    flink = await faults.flink_job(env.get("XRIDES_FLINK_REST_URL", ""))
    return {
        **{k: answers[k] for k in ("sent", "acknowledged", "refused", "hung", "invalid_refused")},
        "statuses": answers["statuses"],
        "bookings_acknowledged": len(expected),
        "stored": postgres["stored"],
        "duplicated": postgres["duplicated"],
        "lost": postgres["lost"],
        "wrong_version": postgres["wrong_version"],
        "acknowledged_without_receipt": without_receipt,
        "elasticsearch": elastic,
        "tracking": tracking,
        "lost_examples": postgres["lost_examples"],
        # requests that got no acknowledgement (5xx, refused connections, time-outs), and from the
        # first to the last of them: how long clients saw the fault
        "failed_requests": len(failed),
        "failures_span_s": round(max(failed) - min(failed), 1) if failed else 0.0,
        **({"flink": flink} if flink else {}),
    }


def table(results: dict[str, Any]) -> str:
    head = (
        "| Scenario | Sent | Acknowledged | Refused | Hung | Stored | Duplicated | Lost | Older version won |"
        " In Elasticsearch (missing / duplicated) | Tracking wrong | Failed requests (over s) |"
        " Restart (s) | Recovered in (s) | Other parts crashed |"
    )
    lines = [head, "|" + "---|" * 15]
    for s in results["scenarios"]:
        es, tracking = s["elasticsearch"], s["tracking"]
        cells = [
            s[k] for k in ("name", "sent", "acknowledged", "refused", "hung", "stored", "duplicated", "lost")
        ]
        cells += [s["wrong_version"], f"{es['indexed']} ({es['missing']} / {es['duplicated']})"]
        cells += [
            f"{tracking['wrong']} of {tracking['checked']}",
            f"{s.get('failed_requests', '-')} ({s.get('failures_span_s', '-')})",
            s["restart_seconds"],
            s["time_to_recover_s"],
            ", ".join(s.get("crashed", [])) or "none",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def update_reliability_doc(results: dict[str, Any], doc: Path, marker: str = "chaos") -> None:
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
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
    parser.add_argument("--profile", choices=("single", "cluster"), default="single",
                        help="the stack's profile (cluster: make cluster-up)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/chaos[-cluster]-latest.json")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "reliability.md")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    cluster = args.profile == "cluster"
    if env.get("XRIDES_PROFILE", "single") != args.profile:
        parser.error(f"the stack in the environment runs the {env.get('XRIDES_PROFILE', 'single')} profile")
    known = CLUSTER_SCENARIOS if cluster else SCENARIOS
    default = [s.name for s in known] if cluster or not args.quick else list(QUICK)
    names = args.only.split(",") if args.only else default
    chosen = [s for s in known if s.name in names]
    if len(chosen) != len(names):
        parser.error(f"unknown scenarios; known: {', '.join(s.name for s in known)}")
    timing = CLUSTER_TIMING if cluster else QUICK_TIMING if args.quick else FULL_TIMING
    out = args.out or REPO / "benchmarks" / "results" / f"chaos{'-cluster' if cluster else ''}-latest.json"
    results: dict[str, Any] = {
        "started_at_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "profile": "cluster" if cluster else "quick" if args.quick else "full",
        "command": "python -m benchmarks.chaos" + (" --profile cluster" if cluster else ""),
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    if args.doc.exists() and not args.only:
        update_reliability_doc(results, args.doc, "chaos-cluster" if cluster else "chaos")
    print(table(results))
    bad = [
        s["name"]
        for s in results["scenarios"]
        if s["lost"]
        or s["acknowledged_without_receipt"]
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
