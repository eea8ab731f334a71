"""Open-loop HTTP load: requests leave on a fixed schedule, whatever the server does.

Latency is measured from each request's *intended* send time, so a server that slows down cannot
hide it by slowing the generator (coordinated omission). Bodies are prepared before the clock
starts, so the generator's own CPU goes to sending. Run it in its own process:

    python -m loadgen.openloop --rate 2000 --seconds 20 --mode single
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

from loadgen.rides import RideGenerator


@dataclass
class LoadResult:
    mode: str
    target_rate: float
    seconds: float
    sent: int = 0
    ok: int = 0
    rides_ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    achieved_rate: float = 0.0
    late_starts: int = 0  # requests the generator itself could not send within 5 ms of schedule
    latency_ms: dict[str, float] = field(default_factory=dict)
    # (intended send time as Unix seconds, request id) of every accepted request, when asked for
    accepted: list[tuple[float, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def prepare_bodies(mode: str, count: int, batch_size: int, seed: int) -> list[bytes]:
    generator = RideGenerator(seed=seed, first_booking_id=seed * 10**9 + 1)
    if mode == "single":
        return [orjson.dumps(generator.ride()) for _ in range(count)]
    return [orjson.dumps([generator.ride() for _ in range(batch_size)]) for _ in range(count)]


async def run_load(
    base_url: str,
    api_key: str,
    mode: str,
    rate: float,
    seconds: float,
    batch_size: int = 1000,
    connections: int = 512,
    seed: int | None = None,
    record_ids: bool = False,
) -> LoadResult:
    total = int(rate * seconds)
    bodies = prepare_bodies(mode, total, batch_size, seed or int(time.time()) % 100_000)
    path = "/v1/rides" if mode == "single" else "/v1/rides/batch"
    url = base_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: collections.Counter[str] = collections.Counter()
    result = LoadResult(mode=mode, target_rate=rate, seconds=seconds)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        wall_offset = time.time() - time.perf_counter()

        async def one(body: bytes, intended: float) -> None:
            try:
                async with session.post(url, data=body) as response:
                    payload = await response.read()
                    status = str(response.status)
                    if record_ids and response.status == 202:
                        result.accepted.append((intended + wall_offset, orjson.loads(payload)["request_id"]))
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - intended)
            statuses[status] += 1

        tasks = []
        start = time.perf_counter() + 0.2
        for i, body in enumerate(bodies):
            intended = start + i / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.005:
                result.late_starts += 1
            tasks.append(asyncio.create_task(one(body, intended)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    result.sent = total
    result.statuses = dict(statuses)
    result.ok = statuses.get("202", 0)
    result.rides_ok = result.ok * (1 if mode == "single" else batch_size)
    result.achieved_rate = total / elapsed
    result.latency_ms = {
        name: round(percentile(latencies, q) * 1000, 2)
        for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("p99.9", 99.9), ("max", 100))
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("XRIDES_API_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--mode", choices=("single", "batch"), default="single")
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=512)
    args = parser.parse_args()
    result = asyncio.run(
        run_load(
            args.url,
            os.environ.get("XRIDES_API_KEY", ""),
            args.mode,
            args.rate,
            args.seconds,
            args.batch_size,
            args.connections,
        )
    )
    summary = result.as_dict()
    summary.pop("accepted")
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0 if result.ok == result.sent else 1


if __name__ == "__main__":
    raise SystemExit(main())
