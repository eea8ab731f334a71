"""The client under faults: N rides sent through ``xrides_client`` while the API is killed and
restarted twice and Kafka once, then every outcome checked against PostgreSQL ride by ride.

    python -m benchmarks.client_faults [--rides 100000]   # writes benchmarks/results/client-faults.json

What must hold, and what the results file reports:

- every ride reaches a final outcome, and every one is ``stored``;
- PostgreSQL holds each booking exactly once, at the version the client's request produced;
- each outcome's request id is a receipt of PostgreSQL's for the same booking (outcomes agree with
  the store ride by ride);
- ``kafka_copies``: how many bookings reached Kafka more than once (a retry whose first attempt
  Kafka took but whose answer was lost, after the API that held the idempotency key was killed).
  They are stored once all the same; the number says what the API's idempotency store covers.

The faults are the fault suite's (benchmarks/chaos/faults.py): SIGKILL of the part's process group,
then the launcher's ``up --only``. The integration test runs the same code at a smaller N.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from xrides_client import Client, Outcome

from benchmarks.chaos import faults
from benchmarks.harness.scenarios import git_commit
from loadgen.rides import RideGenerator

RESULTS = Path(__file__).resolve().parent / "results" / "client-faults.json"
RUN_DIR = faults.REPO / ".stack" / "run"
# (share of the rides acknowledged, part to kill): the API twice, Kafka once, mid-send
PLAN = ((0.15, "api"), (0.45, "kafka"), (0.75, "api"))


@dataclass
class FaultRun:
    rides: int
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    stored_once: int = 0
    missing: int = 0
    duplicated_rows: int = 0
    outcome_disagrees: int = 0
    kafka_copies: int = 0
    client_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.outcomes == {"stored": self.rides}
            and self.stored_once == self.rides
            and not (self.missing or self.duplicated_rows or self.outcome_disagrees)
        )


def make_rides(count: int, first_booking_id: int) -> list[dict[str, Any]]:
    generator = RideGenerator(seed=first_booking_id % 1000, first_booking_id=first_booking_id)
    return [generator.ride() for _ in range(count)]


def _inject(env: dict[str, str], client: Client, total: int, run: FaultRun, stop: threading.Event) -> None:
    """Kill and restart the planned parts as the client's acknowledgements pass each mark."""
    for share, part in PLAN:
        while not stop.is_set():
            stats = client.stats()
            done = stats.outcomes.get("stored", 0) + stats.tracking + stats.outcomes.get("accepted", 0)
            if done >= share * total:
                break
            time.sleep(0.05)
        if stop.is_set():
            return
        started = time.monotonic()
        faults.kill(RUN_DIR, part)
        time.sleep(1.0)
        asyncio.run(faults.restart([part], env))
        run.faults.append(
            {"part": part, "at_share": share, "restart_s": round(time.monotonic() - started, 1)}
        )


async def _verify(dsn: str, outcomes: list[Outcome], run: FaultRun) -> None:
    bookings = [o.booking_id for o in outcomes]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT booking_id, count(*) AS n FROM cab_rides WHERE booking_id = ANY($1::bigint[]) GROUP BY 1",
            bookings,
        )
        receipts = await conn.fetch(
            "SELECT booking_id, kafka_partition, kafka_offset, outcome FROM ride_receipts"
            " WHERE booking_id = ANY($1::bigint[])",
            bookings,
        )
    finally:
        await conn.close()
    counts = {r["booking_id"]: r["n"] for r in rows}
    run.stored_once = sum(1 for b in bookings if counts.get(b) == 1)
    run.missing = sum(1 for b in bookings if b not in counts)
    run.duplicated_rows = sum(1 for n in counts.values() if n > 1)
    by_position = {f"r{r['kafka_partition']}-{r['kafka_offset']}": r for r in receipts}
    copies: dict[int, int] = {}
    for r in receipts:
        copies[r["booking_id"]] = copies.get(r["booking_id"], 0) + 1
    run.kafka_copies = sum(1 for n in copies.values() if n > 1)
    for outcome in outcomes:
        receipt = by_position.get(outcome.request_id or "")
        if receipt is None or receipt["booking_id"] != outcome.booking_id or receipt["outcome"] == "failed":
            run.outcome_disagrees += 1


def run_with_faults(
    env: dict[str, str], rides: list[dict[str, Any]], spool: Path, timeout_s: float = 900
) -> FaultRun:
    """Send every ride through the client while the plan's faults strike; verify against PostgreSQL."""
    run = FaultRun(len(rides))
    stop = threading.Event()
    started = time.monotonic()
    with Client(env["XRIDES_API_URL"], env["XRIDES_API_KEY"], spool=str(spool), max_retry_time_s=600,
                max_attempts=50, track_timeout_s=timeout_s) as client:  # fmt: skip
        injector = threading.Thread(target=_inject, args=(env, client, len(rides), run, stop), daemon=True)
        injector.start()
        handles = client.send_many(rides)
        finished = client.flush(timeout=timeout_s)
        stop.set()
        injector.join(timeout=120)
        run.client_stats = asdict(client.stats())
    run.seconds = round(time.monotonic() - started, 1)
    outcomes = [h.outcome for h in handles if h.outcome is not None]
    for outcome in outcomes:
        run.outcomes[outcome.kind] = run.outcomes.get(outcome.kind, 0) + 1
    if not finished or len(outcomes) != len(rides):
        run.outcomes["unfinished"] = len(rides) - len(outcomes)
    asyncio.run(_verify(env["XRIDES_PG_DSN"], outcomes, run))
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_faults", description=__doc__)
    parser.add_argument("--rides", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    first = int(time.time()) % 100_000 * 10**6 + 5 * 10**13
    with tempfile.TemporaryDirectory() as tmp:
        run = run_with_faults(env, make_rides(args.rides, first), Path(tmp) / "spool.db")
    report = {
        **asdict(run),
        "ok": run.ok,
        "git_commit": git_commit(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n", encoding="utf-8")
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
