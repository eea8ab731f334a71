"""CPU per ride of the ride model's hot paths: validate, encode for Kafka, decode in the persister.

    python benchmarks/model_bench.py [--rides 20000]

The API runs ``parse_ride`` and ``RideEnvelope.encode`` for every ride it accepts, the persister
``decode_envelope`` for every message it stores; at 20,000 rides/s each microsecond here is 2% of
a core. Prints microseconds per ride for each step.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from loadgen.rides import RideGenerator, TrafficMix, traffic
from xrides.ride import RideEnvelope, new_version, parse_ride
from xrides.ride.envelope import decode_envelope


def per_ride_us(step: Callable[[Any], object], items: Sequence[Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            step(item)
        best = min(best, time.perf_counter() - started)
    return round(best / len(items) * 1e6, 2)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rides", type=int, default=20_000)
    args = parser.parse_args()
    zone = ZoneInfo("Asia/Kolkata")
    rides = [r.ride for r in traffic(RideGenerator(seed=3), args.rides, TrafficMix())]
    bodies = [orjson.dumps(r) for r in rides]
    parsed = [parse_ride(r, zone) for r in rides]
    version = new_version()
    messages = [RideEnvelope(p, version).encode() for p in parsed]
    figures = {
        "json_decode": per_ride_us(orjson.loads, bodies),
        "parse_ride": per_ride_us(lambda r: parse_ride(r, zone), rides),
        "envelope_encode": per_ride_us(lambda p: RideEnvelope(p, version).encode(), parsed),
        "decode_envelope": per_ride_us(decode_envelope, messages),
    }
    print(orjson.dumps({"rides": args.rides, "us_per_ride": figures}, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
