"""The Elasticsearch side: documents per daily index, and their ids when a day disagrees.

A document's ``_id`` is its booking id and its ``version`` the accepted version (the indexer writes
them so), which is what lets a difference be named and told apart from a ride still on its way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from elasticsearch import AsyncElasticsearch, helpers


def index_name(prefix: str, day: date) -> str:
    return f"{prefix}{day.strftime('%Y.%m.%d')}"


def index_day(prefix: str, name: str) -> date | None:
    if not name.startswith(prefix):
        return None
    try:
        return datetime.strptime(name.removeprefix(prefix), "%Y.%m.%d").date()
    except ValueError:
        return None


class RideIndex:
    def __init__(self, es: AsyncElasticsearch, prefix: str) -> None:
        self.es = es
        self.prefix = prefix

    async def counts(self) -> dict[date, int]:
        """Documents per daily index (what ``_count`` answers per index), in one request."""
        response = await self.es.search(
            index=f"{self.prefix}*",
            size=0,
            track_total_hits=False,
            aggs={"indices": {"terms": {"field": "_index", "size": 100_000}}},
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        out: dict[date, int] = {}
        for bucket in (response.get("aggregations") or {}).get("indices", {}).get("buckets", []):
            day = index_day(self.prefix, bucket["key"])
            if day is not None:
                out[day] = bucket["doc_count"]
        return out

    async def settled_count(self, day: date, before_version: int) -> int:
        response = await self.es.count(
            index=index_name(self.prefix, day),
            query={"range": {"version": {"lt": before_version}}},
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        count: int = response["count"]
        return count

    async def ids(self, day: date, before_version: int) -> dict[int, int]:
        """booking -> version of the day's documents accepted before ``before_version``."""
        out: dict[int, int] = {}
        query: dict[str, Any] = {
            "query": {"range": {"version": {"lt": before_version}}},
            "_source": ["version"],
        }
        async for hit in helpers.async_scan(
            self.es,
            index=index_name(self.prefix, day),
            query=query,
            size=5000,
            ignore_unavailable=True,
            allow_no_indices=True,
        ):
            out[int(hit["_id"])] = int(hit["_source"].get("version") or 0)
        return out

    async def versions(self, booking_ids: Sequence[int]) -> dict[int, int]:
        """booking -> the highest version any daily index holds for it."""
        out: dict[int, int] = {}
        for start in range(0, len(booking_ids), 1000):
            chunk = [str(b) for b in booking_ids[start : start + 1000]]
            response = await self.es.search(
                index=f"{self.prefix}*",
                query={"ids": {"values": chunk}},
                size=len(chunk) * 2,
                source_includes=["version"],
                ignore_unavailable=True,
                allow_no_indices=True,
            )
            for hit in response["hits"]["hits"]:
                booking = int(hit["_id"])
                out[booking] = max(out.get(booking, 0), int(hit["_source"].get("version") or 0))
        return out

    async def newest_received_at(self) -> datetime | None:
        response = await self.es.search(
            index=f"{self.prefix}*",
            size=0,
            track_total_hits=False,
            aggs={"newest": {"max": {"field": "received_at"}}},
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        millis = ((response.get("aggregations") or {}).get("newest") or {}).get("value")
        if millis is None:
            return None
        return datetime.fromtimestamp(float(millis) / 1000, UTC)
