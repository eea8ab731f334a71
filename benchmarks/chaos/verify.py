"""After a fault and recovery: was every acknowledged ride kept exactly once, everywhere?

The load generator records every request's answer (``--record-outcomes``). From those:
- PostgreSQL: each acknowledged booking has exactly one row, at (at least) the highest version an
  acknowledged request of it carried: an older replay never won, an update never got lost.
- Elasticsearch: each acknowledged booking (all are inside the hot window) is one document across
  the daily ``rides-*`` indices, with the same latest version.
- Every request got an answer: a client-side timeout (30 s) counts as a hang; a 5xx/429 or a
  refused connection is a visible failure, which is allowed; a 202 whose ride is missing is a loss.
- Tracking: ``GET /v1/requests/{id}`` tells the truth (stored or superseded, the right booking).
"""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Any

import aiohttp
import asyncpg

from xrides.request_ids import parse_request_id
from xrides.search.client import es_hosts

Outcome = tuple[float, str, int | None, str, str | None]  # sent, kind, booking id, status, request id
HANG = "TimeoutError"


def summarise_answers(outcomes: list[Outcome]) -> dict[str, Any]:
    statuses = collections.Counter(o[3] for o in outcomes)
    acknowledged = [o for o in outcomes if o[3] == "202"]
    return {
        "sent": len(outcomes),
        "acknowledged": len(acknowledged),
        "invalid_refused": statuses.get("422", 0),
        "refused": sum(n for s, n in statuses.items() if s not in ("202", "422", HANG)),
        "hung": statuses.get(HANG, 0),
        "statuses": dict(statuses),
    }


async def expected_versions(dsn: str, outcomes: list[Outcome]) -> tuple[dict[int, int], int]:
    """booking id -> the highest version any acknowledged request of it carried; and how many
    acknowledged positions have no receipt at all (a loss between Kafka and the persister).

    A request id is the Kafka position the API wrote to, and the persister's receipt for that
    position holds the version the API stamped, so this is exact even when a refused request was
    in fact written, or a retry after an API restart wrote a second time.
    """
    positions = {}
    for _, _, booking_id, status, request_id in outcomes:
        if status == "202" and request_id and booking_id is not None:
            position = parse_request_id(request_id).position
            positions[(position.partition, position.offset)] = booking_id
    if not positions:
        return {}, 0
    parts, offsets = zip(*positions, strict=True)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT r.kafka_partition, r.kafka_offset, r.version FROM ride_receipts r"
            " JOIN unnest($1::int[], $2::bigint[]) AS p(part, off)"
            " ON r.kafka_partition = p.part AND r.kafka_offset = p.off",
            list(parts),
            list(offsets),
        )
    finally:
        await conn.close()
    expected: dict[int, int] = {}
    for row in rows:
        booking = positions[(row["kafka_partition"], row["kafka_offset"])]
        expected[booking] = max(expected.get(booking, 0), row["version"] or 0)
    for booking in positions.values():
        expected.setdefault(booking, 0)  # acknowledged, but no receipt: must still be stored
    return expected, len(positions) - len(rows)


async def check_postgres(dsn: str, expected: dict[int, int]) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT booking_id, count(*) AS n, max(version) AS version"
            " FROM cab_rides WHERE booking_id = ANY($1::bigint[]) GROUP BY booking_id",
            list(expected),
        )
    finally:
        await conn.close()
    found = {r["booking_id"]: r for r in rows}
    lost = [b for b in expected if b not in found]
    older = [b for b, v in expected.items() if b in found and found[b]["version"] < v]
    return {
        "stored": len(found),
        "duplicated": sum(r["n"] - 1 for r in rows),
        "lost": len(lost),
        "wrong_version": len(older),
        "lost_examples": lost[:10],
    }


async def check_elasticsearch(es_url: str, prefix: str, expected: dict[int, int]) -> dict[str, Any]:
    counts: collections.Counter[int] = collections.Counter()
    versions: dict[int, int] = {}
    ids = [str(b) for b in expected]
    es_url = es_hosts(es_url)[0]  # any node of a cluster answers for all of it
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{es_url}/{prefix}*/_refresh") as response:
            response.raise_for_status()
        for begin in range(0, len(ids), 5000):
            chunk = ids[begin : begin + 5000]
            query = {"query": {"ids": {"values": chunk}}, "size": 2 * len(chunk), "_source": ["version"]}
            async with http.post(f"{es_url}/{prefix}*/_search", json=query) as response:
                response.raise_for_status()
                hits = (await response.json())["hits"]["hits"]
            for hit in hits:
                booking = int(hit["_id"])
                counts[booking] += 1
                versions[booking] = max(versions.get(booking, 0), hit["_source"].get("version") or 0)
    missing = [b for b in expected if b not in counts]
    older = [b for b, v in expected.items() if b in versions and versions[b] < v]
    return {
        "indexed": len(counts),
        "duplicated": sum(n - 1 for n in counts.values()),
        "missing": len(missing),
        "wrong_version": len(older),
        "missing_examples": missing[:10],
    }


async def check_tracking(api_url: str, api_key: str, outcomes: list[Outcome], sample: int) -> dict[str, Any]:
    acknowledged = [o for o in outcomes if o[3] == "202" and o[4]]
    chosen = random.Random(7).sample(acknowledged, min(sample, len(acknowledged)))
    wrong: list[str] = []
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one(outcome: Outcome) -> None:
            async with http.get(f"{api_url}/v1/requests/{outcome[4]}") as response:
                body = await response.json()
            item = (body.get("items") or [{}])[0]
            if response.status != 200 or item.get("state") not in ("stored", "superseded"):
                wrong.append(f"{outcome[4]}: {response.status} {body.get('state')}")
            elif item.get("booking_id") != outcome[2]:
                wrong.append(f"{outcome[4]}: booking {item.get('booking_id')} != {outcome[2]}")

        for begin in range(0, len(chosen), 50):
            await asyncio.gather(*(one(o) for o in chosen[begin : begin + 50]))
    return {"checked": len(chosen), "wrong": len(wrong), "wrong_examples": wrong[:5]}
