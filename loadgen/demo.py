"""``make run``'s demo: stream rides into the running API and show them being stored.

Posts rides at a steady rate (single and batch), then follows their request ids until the
persister has stored them, printing a line per second: sent, acknowledged, stored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import aiohttp

from loadgen.rides import RideGenerator


async def _post(session: aiohttp.ClientSession, url: str, body: Any) -> dict[str, Any]:
    async with session.post(url, json=body) as response:
        data: dict[str, Any] = await response.json()
        if response.status >= 300 and response.status != 207:
            raise RuntimeError(f"{url} answered {response.status}: {data}")
        return data


async def _state(session: aiohttp.ClientSession, base: str, request_id: str) -> str:
    async with session.get(f"{base}/v1/requests/{request_id}") as response:
        data: dict[str, Any] = await response.json()
        return str(data.get("state", data.get("error_code")))


def _es_url() -> str:
    return os.environ.get("XRIDES_ES_URL", "http://127.0.0.1:19200")


async def _searchable(low: int, high: int, wait_s: float = 30) -> int:
    """How many of the demo's rides the Flink job and indexer made searchable (best effort)."""
    query = {"query": {"range": {"booking_id": {"gte": low, "lte": high}}}}
    deadline = time.monotonic() + wait_s
    count = 0
    async with aiohttp.ClientSession() as es:  # its own session: the API key stays with the API
        while time.monotonic() < deadline:
            try:
                async with es.post(f"{_es_url()}/rides-*/_count", json=query) as response:
                    count = int((await response.json()).get("count", 0)) if response.status == 200 else 0
            except aiohttp.ClientError:
                count = 0
            if count >= high - low + 1:
                break
            await asyncio.sleep(1)
    return count


async def run(base: str, key: str, seconds: float, rate: float) -> int:
    first_id = int(time.time() * 1000) % 10**12
    generator = RideGenerator(seed=int(time.time()), first_booking_id=first_id)
    request_ids: list[str] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < seconds:
            if sent % 10 == 9:
                body = await _post(session, f"{base}/v1/rides/batch", [generator.ride() for _ in range(10)])
                request_ids.append(body["request_id"])
                sent += 10
            else:
                body = await _post(session, f"{base}/v1/rides", generator.ride())
                request_ids.append(body["request_id"])
                sent += 1
            await asyncio.sleep(1 / rate)
        print(f"sent {sent} rides in {len(request_ids)} requests; waiting for them to be stored...")
        deadline = time.monotonic() + 60
        states: list[str] = []
        while time.monotonic() < deadline:
            states = await asyncio.gather(*(_state(session, base, rid) for rid in request_ids))
            stored = states.count("stored")
            print(f"  stored {stored}/{len(states)} requests ({states.count('accepted')} still accepted)")
            if stored == len(states):
                break
            await asyncio.sleep(1)
        searchable = await _searchable(first_id, generator.next_id - 1)
        print(f"  searchable in Elasticsearch (rides-*): {searchable}/{sent} rides")
        prometheus = os.environ.get("XRIDES_PROMETHEUS_URL", "http://127.0.0.1:19090")
        print("where to look:")
        print(f"  API docs (Swagger UI)    {base}/docs")
        auth = '-H "Authorization: Bearer $XRIDES_API_KEY"'
        print(f"  track a request          curl {auth} {base}/v1/requests/{request_ids[0]}")
        print(f"  metrics                  {base}/metrics, persister :9101/metrics, Prometheus {prometheus}")
        print("  rides in PostgreSQL      psql \"$XRIDES_PG_DSN\" -c 'select count(*) from cab_rides'")
        print(f"  rides in Elasticsearch   curl '{_es_url()}/rides-*/_search?size=1&pretty'")
        print("  stack health and logs    make status; python3 -m deploy.stack logs persister")
        return 0 if states and states.count("stored") == len(states) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20, help="requests per second")
    args = parser.parse_args()
    base = os.environ.get("XRIDES_API_URL", "http://127.0.0.1:8000")
    key = os.environ.get("XRIDES_API_KEY", "")
    return asyncio.run(run(base, key, args.seconds, args.rate))


if __name__ == "__main__":
    raise SystemExit(main())
