"""Open-loop HTTP load: requests leave on a fixed schedule, whatever the server does.

Latency is measured from each request's *intended* send time, so a server that slows down cannot
hide it by slowing the generator (coordinated omission). Bodies are prepared before the clock
starts, so the generator's own CPU goes to sending. The schedule is a list of (seconds, rate)
segments: a constant rate, a burst, or a compressed day (``--daily``). Run it in its own process:

    python -m loadgen.openloop --rate 2000 --seconds 20 --mode single
    python -m loadgen.openloop --segments 60:3.3,300:33,60:3.3 --invalid 0.01 --out burst.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import gc
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from loadgen.rawhttp import HttpPool
from loadgen.rides import RideGenerator, TrafficMix, daily_schedule, traffic

Segment = tuple[float, float]  # (seconds, requests per second)


@dataclass
class LoadResult:
    mode: str
    target_rate: float
    seconds: float
    started_at: float = 0.0  # Unix time of the first intended send; timeline seconds count from it
    sent: int = 0
    ok: int = 0
    rides_ok: int = 0
    # answers that were not the expected one: a valid ride not accepted, an invalid one not 422
    unexpected: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    achieved_rate: float = 0.0
    late_starts: int = 0  # requests the generator itself could not send within 5 ms of schedule
    latency_ms: dict[str, float] = field(default_factory=dict)
    # one entry per second of intended send time: sent, ok, unexpected, p50/p99 latency
    timeline: list[dict[str, float]] = field(default_factory=list)
    # (intended send time as Unix seconds, request id) of every accepted request, when asked for
    accepted: list[tuple[float, str]] = field(default_factory=list)
    # every single-ride request, when asked for: [intended Unix time, kind, booking id, status,
    # request id or None] (the fault suite checks each acknowledged ride downstream)
    outcomes: list[tuple[float, str, int | None, str, str | None]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


REQUEST_TIMEOUT_S = 30.0  # a request unanswered this long is a hang (the fault suite counts them)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {
        name: round(percentile(ordered, q) * 1000, 2)
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("p99.9", 99.9), ("max", 100))
    }


def send_offsets(segments: list[Segment]) -> list[float]:
    """Intended send times, in seconds from the start, evenly spaced within each segment."""
    offsets: list[float] = []
    begin = 0.0
    for seconds, rate in segments:
        count = round(seconds * rate)
        offsets.extend(begin + i / rate for i in range(count))
        begin += seconds
    return offsets


@dataclass(frozen=True, slots=True)
class Prepared:
    body: bytes
    valid: int  # valid rides in the body
    booking_id: int | None = None  # single mode only
    kind: str = "batch"


def prepare_bodies(
    mode: str, count: int, batch_size: int, seed: int, mix: TrafficMix | None = None
) -> list[Prepared]:
    """``count`` request bodies with the number of valid rides each carries."""
    generator = RideGenerator(seed=seed, first_booking_id=seed * 10**9 + 1)
    mix = mix or TrafficMix(updates=0.0, retries=0.0, invalid=0.0)
    if mode == "single":
        return [
            Prepared(orjson.dumps(r.ride), int(r.valid), r.ride.get("booking_id"), r.kind)
            for r in traffic(generator, count, mix)
        ]
    bodies = []
    for _ in range(count):
        requests = traffic(generator, batch_size, mix)
        bodies.append(Prepared(orjson.dumps([r.ride for r in requests]), sum(r.valid for r in requests)))
    return bodies


@dataclass
class _Recorder:
    """Every answer of a run, as it comes: latencies per second, statuses, unexpected answers."""

    result: LoadResult
    start: float = 0.0
    wall_offset: float = 0.0
    latencies: list[float] = field(default_factory=list)
    per_second: dict[int, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    per_second_bad: collections.Counter[int] = field(default_factory=collections.Counter)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)

    def record(
        self, prepared: Prepared, intended: float, status: str, accepted: int, request_id: str | None
    ) -> None:
        result = self.result
        if request_id is not None and result.mode == "single":
            result.accepted.append((intended + self.wall_offset, request_id))
        latency = time.perf_counter() - intended
        second = int(intended - self.start)
        self.latencies.append(latency)
        self.per_second[second].append(latency)
        self.statuses[status] += 1
        result.rides_ok += accepted
        if accepted != prepared.valid or (status == "422") != (prepared.valid == 0):
            result.unexpected += 1
            self.per_second_bad[second] += 1

    def finish(self, sent: int, elapsed: float) -> LoadResult:
        result = self.result
        result.sent = sent
        result.statuses = dict(self.statuses)
        result.ok = self.statuses.get("202", 0) + self.statuses.get("207", 0)
        result.achieved_rate = round(sent / elapsed, 2)
        result.latency_ms = latency_summary(self.latencies)
        for second in sorted(self.per_second):
            window = sorted(self.per_second[second])
            result.timeline.append(
                {
                    "t": second,
                    "sent": len(window),
                    "unexpected": self.per_second_bad[second],
                    "p50_ms": round(percentile(window, 50) * 1000, 2),
                    "p99_ms": round(percentile(window, 99) * 1000, 2),
                }
            )
        return result


def _accepted(mode: str, code: int, payload: bytes, want_id: bool) -> tuple[int, str | None]:
    """Rides accepted by one answer, and the request id of an accepted single ride when wanted."""
    if mode == "single":
        if code != 202:
            return 0, None
        return 1, orjson.loads(payload)["request_id"] if want_id else None
    if code in (202, 207):
        return int(orjson.loads(payload)["accepted"]), None
    return 0, None


async def run_load(
    base_url: str,
    api_key: str,
    mode: str,
    rate: float = 0.0,
    seconds: float = 0.0,
    batch_size: int = 1000,
    connections: int = 512,
    seed: int | None = None,
    record_ids: bool = False,
    segments: list[Segment] | None = None,
    record_outcomes: bool = False,
    mix: TrafficMix | None = None,
) -> LoadResult:
    segments = segments or [(seconds, rate)]
    offsets = send_offsets(segments)
    total_seconds = sum(s for s, _ in segments)
    bodies = prepare_bodies(mode, len(offsets), batch_size, seed or int(time.time()) % 100_000, mix)
    # The prepared bodies live for the whole run: keep the collector from rescanning them in full
    # collections that would pause the sender (with the API's own collector settled, the ack p99 at
    # 2,000/s, consumers paused, went from 36 ms to 9-13 ms).
    with _collector_quiet():
        path = "/v1/rides" if mode == "single" else "/v1/rides/batch"
        url = base_url.rstrip("/") + path
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        result = LoadResult(
            mode=mode, target_rate=round(len(offsets) / total_seconds, 2), seconds=total_seconds
        )
        recorder = _Recorder(result)
        async with _client(url, headers, connections) as post:
            recorder.wall_offset = time.time() - time.perf_counter()
            start = recorder.start = time.perf_counter() + 0.2
            result.started_at = start + recorder.wall_offset

            async def one(prepared: Prepared, intended: float) -> None:
                accepted, request_id = 0, None
                try:
                    code, payload = await post(prepared.body)
                    status = str(code)
                    accepted, request_id = _accepted(mode, code, payload, record_ids or record_outcomes)
                except (aiohttp.ClientError, OSError) as exc:  # OSError covers TimeoutError
                    status = type(exc).__name__
                if record_outcomes:
                    outcome = (
                        intended + recorder.wall_offset,
                        prepared.kind,
                        prepared.booking_id,
                        status,
                        request_id,
                    )
                    result.outcomes.append(outcome)
                recorder.record(prepared, intended, status, accepted, request_id if record_ids else None)

            tasks = []
            for prepared, offset in zip(bodies, offsets, strict=True):
                intended = start + offset
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.005:
                    result.late_starts += 1
                tasks.append(asyncio.create_task(one(prepared, intended)))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
        return recorder.finish(len(offsets), elapsed)


@contextlib.contextmanager
def _collector_quiet() -> Iterator[None]:
    """Freeze what exists now and make collections rare for the block; restore both after."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@contextlib.asynccontextmanager
async def _client(
    url: str, headers: dict[str, str], connections: int
) -> AsyncIterator[Callable[[bytes], Awaitable[tuple[int, bytes]]]]:
    """``post(body) -> (status, body)``: the lean client for http://, aiohttp for anything else."""
    if url.startswith("http://"):
        pool = HttpPool(url, headers, connections)
        try:
            yield functools.partial(pool.post, timeout_s=REQUEST_TIMEOUT_S)
        finally:
            pool.close()
        return
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:

        async def post(body: bytes) -> tuple[int, bytes]:
            async with session.post(url, data=body) as response:
                return response.status, await response.read()

        yield post


def parse_segments(text: str) -> list[Segment]:
    """``60:3.3,300:33`` -> [(60, 3.3), (300, 33)]."""
    segments = []
    for part in text.split(","):
        seconds, _, rate = part.partition(":")
        segments.append((float(seconds), float(rate)))
    return segments


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("XRIDES_API_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--mode", choices=("single", "batch"), default="single")
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--segments", type=parse_segments, help="seconds:rate,... (overrides --rate)")
    parser.add_argument("--daily", type=float, metavar="SECONDS", help="a day's curve compressed")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--updates", type=float, default=0.0, help="share of updates (cancellations)")
    parser.add_argument("--retries", type=float, default=0.0, help="share of unchanged re-sends")
    parser.add_argument("--invalid", type=float, default=0.0, help="share of invalid rides")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--record-ids", action="store_true", help="keep accepted request ids")
    parser.add_argument("--record-outcomes", action="store_true", help="keep every request's answer")
    parser.add_argument("--out", type=Path, help="write the full result (timeline, ids) here")
    args = parser.parse_args()
    segments = args.segments
    if args.daily:
        segments = daily_schedule(args.daily, args.rate)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(
            run_load(
                args.url,
                os.environ.get("XRIDES_API_KEY", ""),
                args.mode,
                args.rate,
                args.seconds,
                args.batch_size,
                args.connections,
                seed=args.seed,
                record_ids=args.record_ids,
                segments=segments,
                mix=TrafficMix(args.updates, args.retries, args.invalid),
                record_outcomes=args.record_outcomes,
            )
        )
    full = result.as_dict()
    if args.out:
        args.out.write_bytes(orjson.dumps(full))
    for bulky in ("accepted", "timeline", "outcomes"):
        full.pop(bulky)
    print(orjson.dumps(full, option=orjson.OPT_INDENT_2).decode())
    return 0 if result.unexpected == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
