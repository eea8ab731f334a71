"""The scenarios ``make bench`` runs, each against the live local stack.

A load scenario starts the open-loop generator (``loadgen.openloop``) in its own process and,
around it, samples CPU and memory of every process, consumer lag, POST -> stored for every accepted
request and POST -> searchable for probe rides; when the load ends it waits for the pipeline to
catch up and reports how long that took.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.chaos.faults import pause
from benchmarks.harness.observe import LagProbe, LagSeries, Probes, sample_lag, stored_latencies, wait_drained
from benchmarks.harness.procstat import Sampler
from loadgen.openloop import Segment, latency_summary
from loadgen.rides import RideGenerator
from xrides.kafka import KafkaAdmin, KafkaConfig
from xrides.topics import RIDES

REPO = Path(__file__).resolve().parents[2]
MIX = ("--updates", "0.05", "--retries", "0.02", "--invalid", "0.01")


@dataclass(frozen=True)
class Context:
    env: dict[str, str]
    run_dir: Path
    drain_timeout_s: float = 300.0

    @property
    def api_url(self) -> str:
        return self.env["XRIDES_API_URL"]


@dataclass(frozen=True)
class LoadScenario:
    name: str
    description: str
    segments: tuple[Segment, ...]
    probes: bool = True


async def run_loadgen(
    ctx: Context,
    segments: tuple[Segment, ...],
    mode: str = "single",
    url: str | None = None,
    extra: tuple[str, ...] = MIX,
    sampler: Sampler | None = None,
) -> dict[str, Any]:
    """One open-loop run in its own process; its full result (timeline, accepted ids)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        spec = ",".join(f"{s:g}:{r:g}" for s, r in segments)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadgen.openloop", "--mode", mode, "--segments", spec,
            "--url", url or ctx.api_url, "--record-ids", "--out", out.name, *extra,
            cwd=REPO, env=ctx.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        if sampler is not None:
            sampler.extra["loadgen"] = process.pid
        _, stderr = await process.communicate()
        if sampler is not None:
            sampler.extra.pop("loadgen", None)
        if process.returncode not in (0, 1):  # 1 = some unexpected answers, which we report
            raise RuntimeError(f"load generator failed: {stderr.decode()[-800:]}")
        out.seek(0)
        result: dict[str, Any] = orjson.loads(out.read())
        return result


def ack_figures(load: dict[str, Any]) -> dict[str, Any]:
    return {
        "offered_rps": load["target_rate"],
        "achieved_rps": load["achieved_rate"],
        "sent": load["sent"],
        "rides_accepted": load["rides_ok"],
        "unexpected_answers": load["unexpected"],
        "statuses": load["statuses"],
        "generator_late_starts": load["late_starts"],
        "ack_latency_ms": load["latency_ms"],
    }


async def run_load_scenario(ctx: Context, scenario: LoadScenario) -> dict[str, Any]:
    lag_probe = LagProbe(ctx.env["XRIDES_KAFKA_BOOTSTRAP"])
    lag = LagSeries()
    probes = Probes(ctx.api_url, ctx.env["XRIDES_API_KEY"], ctx.env["XRIDES_ES_URL"])
    sampler = Sampler(ctx.run_dir)
    load_done, lag_done = asyncio.Event(), asyncio.Event()
    sampler.start()
    lag_task = asyncio.create_task(sample_lag(lag_probe, lag, lag_done))
    probe_tasks = []
    if scenario.probes:
        probe_tasks = [
            asyncio.create_task(probes.send(load_done)),
            asyncio.create_task(probes.watch(load_done)),
        ]
    try:
        load = await run_loadgen(ctx, scenario.segments, sampler=sampler)
        ended = time.time()
        load_done.set()
        drained = await wait_drained(lag_probe, lag, ctx.drain_timeout_s)
        await asyncio.gather(*probe_tasks)
    finally:
        load_done.set()
        lag_done.set()
        await lag_task
        processes = sampler.stop()
        lag_probe.close()
    stored = await stored_latencies(ctx.env["XRIDES_PG_DSN"], [tuple(a) for a in load["accepted"]])
    started = load["started_at"]
    return {
        "name": scenario.name,
        "description": scenario.description,
        "segments": [list(s) for s in scenario.segments],
        **ack_figures(load),
        "e2e_postgres_ms": {"requests": len(stored), **latency_summary(stored)},
        "e2e_elasticsearch_ms": probes.summary() if scenario.probes else None,
        "consumer_lag_peak": lag.peak(),
        "catch_up_seconds_after_load": drained,
        "load_ended_at": ended,
        "processes": {name: asdict(f) for name, f in processes.items()},
        "timeline": {
            "ack": load["timeline"],
            "lag": [{**s, "t": round(s["at"] - started, 1)} for s in lag.samples],
        },
    }


CONSUMERS = ("persister", "flink-job", "es-indexer")
STREAM_SIDE = ("flink-job", "es-indexer")


async def max_sustainable(
    ctx: Context,
    rates: tuple[float, ...],
    seconds: float,
    p99_ms: float | None,
    paused: tuple[str, ...] = (),
    stored_p99_ms: float | None = None,
) -> dict[str, Any]:
    """Raise the single-ride rate step by step; the highest that meets the bounds with no errors.

    Bounds: ack p99 <= ``p99_ms`` and POST -> stored p99 <= ``stored_p99_ms`` (None: not a bound).

    Between steps the persister's lag must return to zero, so one step's backlog does not tax the
    next (the stream side runs at a lower priority and may lag; it is reported, not waited for).
    After a step with paused consumers, their whole backlog is waited for.

    ``paused``: parts stopped (SIGSTOP) during each step and resumed after it. ``CONSUMERS``
    measures what the API and Kafka alone sustain on these cores, as when the ingest tier runs on
    its own nodes; ``STREAM_SIDE`` measures the path to the system of record, API -> Kafka ->
    persister -> PostgreSQL, as when the stream side runs on its own nodes.
    """
    steps = []
    best: dict[str, Any] | None = None
    lag_probe = LagProbe(ctx.env["XRIDES_KAFKA_BOOTSTRAP"])
    try:
        # start from a quiet pipeline: an earlier part's backlog must not tax the first step
        await _caught_up(lag_probe, CONSUMERS, 300)
        for rate in rates:
            for name in paused:
                pause(ctx.run_dir, name)
            sampler = Sampler(ctx.run_dir)
            sampler.start()
            try:
                load = await run_loadgen(ctx, ((seconds, rate),), extra=(), sampler=sampler)
            finally:
                processes = sampler.stop()
                for name in paused:
                    pause(ctx.run_dir, name, resume=True)
            stored = await stored_latencies(ctx.env["XRIDES_PG_DSN"], [tuple(a) for a in load["accepted"]])
            step = {
                **ack_figures(load),
                "e2e_postgres_ms": latency_summary(stored),
                "cpu_percent": {n: f.cpu_percent_mean for n, f in processes.items()},
            }
            step["passed"] = (
                load["unexpected"] == 0
                and (p99_ms is None or load["latency_ms"]["p99"] <= p99_ms)
                and (stored_p99_ms is None or step["e2e_postgres_ms"].get("p99", 1e9) <= stored_p99_ms)
            )
            steps.append(step)
            verdict = "ok" if step["passed"] else "over"
            p99 = load["latency_ms"]["p99"]
            stored_p99 = step["e2e_postgres_ms"].get("p99")
            print(
                f"  single {rate:>6g}/s  p99 {p99:>8} ms  stored p99 {stored_p99} ms"
                f"  unexpected {load['unexpected']}  {verdict}",
                flush=True,
            )
            if not step["passed"]:
                break
            best = step
            # A paused step leaves the paused consumers a backlog whose catch-up (Flink, then
            # Elasticsearch's indexing and merges) would tax the next step: wait for all of it.
            await _caught_up(lag_probe, ("persister", *paused), 300 if paused else 60)
    finally:
        lag_probe.close()
    bounds = [f"p99 ack <= {p99_ms:g} ms"] if p99_ms is not None else []
    bounds += [f"POST -> stored p99 <= {stored_p99_ms:g} ms"] if stored_p99_ms is not None else []
    return {
        "criterion": " and ".join([*bounds, "no unexpected answer"])
        + f", {seconds:g} s per step"
        + (f", {', '.join(paused)} paused during each step" if paused else ""),
        "max_sustainable_rps": best["offered_rps"] if best else 0.0,
        "p99_ms_at_max": best["ack_latency_ms"]["p99"] if best else None,
        "stored_p99_ms_at_max": best["e2e_postgres_ms"].get("p99") if best else None,
        "steps": steps,
    }


async def _caught_up(probe: LagProbe, names: tuple[str, ...], within_s: float) -> None:
    """Wait until the named consumers' lag is zero (at most ``within_s``)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # a broker hiccup: ask again
            lag = await loop.run_in_executor(None, probe.lag)
            if all(lag.get(name, 0) == 0 for name in names):
                return
        await asyncio.sleep(1.0)


BATCH_TOPIC = "xrides-bench-batch"
BATCH_PORT = 8010


async def batch_throughput(
    ctx: Context, rates: tuple[float, ...], seconds: float, batch_size: int, client_rides: int
) -> dict[str, Any]:
    """Rides/s the batch endpoint acknowledges (Kafka acks=all), open loop, batches of ``batch_size``.

    A second API process serves it with the per-key rate limit lifted and ``rides`` pointed at a
    scratch topic with the same partitions, so a million benchmark rides do not flood the
    persister and the Flink job (their own throughput is measured by their benchmarks).
    """
    admin = KafkaAdmin(KafkaConfig(ctx.env["XRIDES_KAFKA_BOOTSTRAP"], "bench-batch"))
    # ``rides`` under another name: its partitions and replication on these brokers (kept if it exists)
    admin.ensure_topics([replace(RIDES, name=BATCH_TOPIC)])
    env = {
        **ctx.env,
        "XRIDES_API_PORT": str(BATCH_PORT),
        "XRIDES_RIDES_TOPIC": BATCH_TOPIC,
        "XRIDES_RATE_LIMIT_PER_S": "10000000",
        "XRIDES_RATE_LIMIT_BURST": "10000000",
        "XRIDES_LOG_KAFKA_BOOTSTRAP": "",
    }
    api = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest_service", cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{BATCH_PORT}"
    steps = []
    best: dict[str, Any] | None = None
    try:
        await _wait_http(f"{url}/readyz", 60)
        for rate in rates:
            sampler = Sampler(ctx.run_dir, extra={"api-batch": api.pid})
            sampler.start()
            load = await run_loadgen(
                ctx, ((seconds, rate),), mode="batch", url=url, sampler=sampler,
                extra=("--batch-size", str(batch_size), "--connections", "64"),
            )  # fmt: skip
            processes = sampler.stop()
            rides_per_s = round(load["rides_ok"] / seconds)
            step = {
                **ack_figures(load),
                "batch_size": batch_size,
                "rides_per_s": rides_per_s,
                "cpu_percent": {n: f.cpu_percent_mean for n, f in processes.items()},
            }
            step["passed"] = (
                load["unexpected"] == 0
                and load["rides_ok"] >= 0.99 * load["sent"] * batch_size
                and load["latency_ms"]["p99"] <= 2000
            )
            steps.append(step)
            verdict = "ok" if step["passed"] else "over"
            p99 = load["latency_ms"]["p99"]
            print(
                f"  batch {rate:>4g}/s x {batch_size}  {rides_per_s:>7} rides/s  p99 {p99} ms  {verdict}",
                flush=True,
            )
            if not step["passed"]:
                break
            best = step
        client = await client_throughput(ctx, url, client_rides, batch_size)
        raw = best["rides_per_s"] if best else 0
        client["vs_raw_batch"] = round(client["rides_per_s"] / raw, 3) if raw else None
        print(
            f"  client   {client['rides']} rides  {client['rides_per_s']:>7} rides/s"
            f"  ({client['vs_raw_batch']} of the raw batch rate)",
            flush=True,
        )
    finally:
        api.terminate()
        await asyncio.wait_for(api.wait(), 30)
        with contextlib.suppress(Exception):
            admin.delete_topics([BATCH_TOPIC])
    return {
        "criterion": "every ride accepted, p99 ack <= 2 s; batches to a scratch topic, rate limit lifted",
        "batch_rides_per_s": best["rides_per_s"] if best else 0,
        "steps": steps,
        "client": client,
    }


async def client_throughput(ctx: Context, url: str, rides: int, batch_size: int) -> dict[str, Any]:
    """The client library (``python -m xrides_client send``) sending a file of ``rides`` to the same
    batch API as fast as it goes, in the same run as the raw batch sweep: what a user of the client
    gets, beside what the endpoint takes from a bare open-loop generator. ``--no-track``: the
    acknowledgement is the end, as for the raw figure."""
    generator = RideGenerator(seed=23, first_booking_id=7 * 10**12)
    with tempfile.TemporaryDirectory(prefix="xrides-bench-client-") as tmp:
        source = Path(tmp) / "rides.ndjson"
        with source.open("wb") as out:
            for _ in range(rides):
                out.write(orjson.dumps(generator.ride()) + b"\n")
        env = {**os.environ, **ctx.env, "XRIDES_API_KEY": ctx.env["XRIDES_API_KEY"]}
        started = time.perf_counter()
        done = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "xrides_client", "send", str(source), "--url", url,
            "--batch-size", str(batch_size), "--no-track", "--json", "--quiet",
            "--spool", str(Path(tmp) / "spool"), cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out_bytes, err_bytes = await done.communicate()
        elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the client failed ({done.returncode}): {err_bytes.decode()[-1000:]}")
    report = orjson.loads(out_bytes.splitlines()[-1])
    if report["accepted"] != rides:
        raise RuntimeError(f"the client had {report['accepted']} of {rides} rides accepted: {report}")
    return {
        "rides": rides,
        "batch_size": batch_size,
        "accepted": report["accepted"],
        # the client's own figure (first request to last acknowledgement), and the wall time of the
        # whole command (interpreter start and reading the file included)
        "rides_per_s": round(report["rides_per_s"]),
        "wall_rides_per_s": round(rides / elapsed),
        "retries": report["retries"],
        "client_report": report,
    }


async def _wait_http(url: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {within_s:g} s")


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environ() -> dict[str, str]:
    return dict(os.environ)
