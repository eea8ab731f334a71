"""How fresh each engine is, said in every answer, with a warning when rides may be missing.

An answer is only as complete as the store it came from. Per engine:

- **newest ride**: the latest ``booking_created`` it holds (a booking is sent when it is made, so
  this is close to the last arrival; an index on ``booking_created`` makes it cheap in PostgreSQL,
  doc values in Elasticsearch). The archive says the newest day it holds instead.
- **lag**: rides acknowledged by the API (in Kafka) that the engine has not received yet: for
  PostgreSQL the persister's offsets (kept in ``consumer_offsets``, committed with the rows) against
  the end of ``rides``; for Elasticsearch the Flink job's group on ``rides`` plus the indexer's on
  ``rides.es``. Unknown (null) when Kafka does not answer within a second.
- **dead letters**: rides acknowledged but never stored: the persister's ``ingest_failures`` not yet
  replayed (missing from PostgreSQL and, later, from the archive), and the actions Elasticsearch
  refused (``rides.es-dlq``, within its retention).

Probes are cached for ``query_freshness_cache_s`` so a busy service asks each store a few times a
minute, not once per query; a probe that fails leaves its part null, never fails the query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from query_dsl.settings import QuerySettings
from query_dsl.timerange import ResolvedRange, iso_utc

log = logging.getLogger("query_dsl.freshness")

KAFKA_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Freshness:
    engine: str
    checked_at: datetime
    newest_ride: datetime | None = None  # latest booking_created held
    newest_day: date | None = None  # the archive: the latest UTC day archived
    lag_rides: int | None = None  # acknowledged but not yet received (None: unknown)
    dead_letters: int | None = None  # acknowledged but never stored here (None: unknown)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine": self.engine, "checked_at": iso_utc(self.checked_at)}
        if self.engine == "archive":
            out["newest_day"] = None if self.newest_day is None else self.newest_day.isoformat()
        else:
            out["newest_ride"] = None if self.newest_ride is None else iso_utc(self.newest_ride)
            out["lag_rides"] = self.lag_rides
        out["dead_letters"] = self.dead_letters
        return out

    def warnings(self, time_range: ResolvedRange, now: datetime) -> list[str]:
        out: list[str] = []
        recent = time_range.end > now - timedelta(days=1)
        if self.lag_rides and recent:
            out.append(
                f"{self.lag_rides} acknowledged rides have not reached {self.engine} yet (its consumers "
                "are behind): the most recent rides may be missing from this answer"
            )
        if self.dead_letters and self.engine == "elasticsearch":
            out.append(
                f"Elasticsearch refused {self.dead_letters} index actions within the dead-letter topic's "
                "retention: those rides may be missing from this answer until they are replayed"
            )
        elif self.dead_letters:
            out.append(
                f"{self.dead_letters} acknowledged rides were dead-lettered and are not in PostgreSQL: "
                "they are missing from this answer until they are replayed"
            )
        if self.engine == "archive" and self.newest_day is not None:
            last = datetime(self.newest_day.year, self.newest_day.month, self.newest_day.day, tzinfo=UTC)
            if time_range.end > last + timedelta(days=1):
                out.append(
                    f"the archive holds days up to {self.newest_day.isoformat()}: later rides of the "
                    "range are not in this answer"
                )
        return out


Probe = Callable[[], Awaitable[Freshness]]


class FreshnessProbe:
    """Cached freshness per engine; the engines' clients are lent by the query engine."""

    def __init__(
        self,
        settings: QuerySettings,
        pool: Callable[[], Awaitable[asyncpg.Pool]],
        es: Callable[[], Any],
        archive_days: Callable[[], list[date]],
    ) -> None:
        self.settings = settings
        self._pool = pool
        self._es = es
        self._archive_days = archive_days
        self._cache: dict[str, tuple[float, Freshness]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._reader: Any = None
        self._admin: Any = None

    async def of(self, engine: str) -> Freshness:
        lock = self._locks.setdefault(engine, asyncio.Lock())
        async with lock:
            cached = self._cache.get(engine)
            if cached is not None and time.monotonic() - cached[0] < self.settings.query_freshness_cache_s:
                return cached[1]
            probe: Probe = {
                "postgres": self._postgres,
                "elasticsearch": self._elasticsearch,
                "archive": self._archive,
            }[engine]
            found = await probe()
            self._cache[engine] = (time.monotonic(), found)
            return found

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    # engines ------------------------------------------------------------------------------
    async def _postgres(self) -> Freshness:
        from query_dsl.compile_pg import quote_table  # noqa: PLC0415

        s = self.settings
        newest = dead = None
        offsets: dict[int, int] | None = None
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            pool = await self._pool()
            async with pool.acquire() as conn:
                table = quote_table(s.query_pg_table)  # from settings, checked and quoted
                newest = await conn.fetchval(f"SELECT max(booking_created)\nFROM {table}")
                with contextlib.suppress(asyncpg.PostgresError):
                    dead = await conn.fetchval(
                        "SELECT count(*) FROM ingest_failures WHERE replayed_at IS NULL"
                    )
                with contextlib.suppress(asyncpg.PostgresError):
                    rows = await conn.fetch(
                        "SELECT partition, next_offset FROM consumer_offsets"
                        " WHERE group_id = $1 AND topic = $2",
                        s.persister_group_id,
                        s.rides_topic,
                    )
                    offsets = {r["partition"]: r["next_offset"] for r in rows}
        lag = None
        if offsets is not None:
            lag = await self._lag([(s.rides_topic, offsets)])
        return Freshness("postgres", datetime.now(UTC), newest_ride=newest, lag_rides=lag, dead_letters=dead)

    async def _elasticsearch(self) -> Freshness:
        s = self.settings
        newest = None
        with contextlib.suppress(Exception):  # any failure leaves the part unknown
            response = await self._es().search(
                index=f"{s.es_rides_prefix}*",
                size=0,
                track_total_hits=False,
                aggs={"newest": {"max": {"field": "booking_created"}}},
                ignore_unavailable=True,
                allow_no_indices=True,
            )
            millis = ((response.get("aggregations") or {}).get("newest") or {}).get("value")
            newest = None if millis is None else datetime.fromtimestamp(float(millis) / 1000, UTC)
        lag = dead = None
        if s.kafka_bootstrap:
            groups = await self._group_offsets(
                [(s.flink_group_id, s.rides_topic), (s.indexer_group_id, s.rides_es_topic)]
            )
            if groups is not None:
                lag = await self._lag(groups)
            dead = await self._topic_size(s.rides_es_dlq_topic)
        return Freshness(
            "elasticsearch", datetime.now(UTC), newest_ride=newest, lag_rides=lag, dead_letters=dead
        )

    async def _archive(self) -> Freshness:
        days: list[date] = []
        with contextlib.suppress(OSError):
            days = await asyncio.to_thread(self._archive_days)
        return Freshness("archive", datetime.now(UTC), newest_day=max(days) if days else None)

    # Kafka ------------------------------------------------------------------------------------
    def _kafka(self) -> tuple[Any, Any]:
        from xrides.kafka import KafkaAdmin, KafkaConfig, TopicReader  # noqa: PLC0415

        if self._reader is None:
            config = KafkaConfig(self.settings.kafka_bootstrap, "xrides-query-freshness")
            self._reader = TopicReader(config, timeout_s=KAFKA_TIMEOUT_S)
            self._admin = KafkaAdmin(config, timeout_s=KAFKA_TIMEOUT_S)
        return self._reader, self._admin

    async def _kafka_call(self, call: Callable[[], Any]) -> Any:
        if not self.settings.kafka_bootstrap:
            return None
        try:
            return await asyncio.wait_for(asyncio.to_thread(call), KAFKA_TIMEOUT_S * 3)
        except Exception as exc:  # Kafka away: lag unknown, the answer still comes
            log.info("freshness: Kafka did not answer", extra={"error.message": str(exc)[:200]})
            return None

    async def _lag(self, consumed: list[tuple[str, dict[int, int]]]) -> int | None:
        """Messages past each committed offset, summed over topics and partitions."""

        def count() -> int:
            reader, _ = self._kafka()
            total = 0
            for topic, offsets in consumed:
                for partition, marks in reader.watermarks(topic).items():
                    total += max(0, marks.high - max(offsets.get(partition, marks.low), marks.low))
            return total

        result = await self._kafka_call(count)
        return None if result is None else int(result)

    async def _group_offsets(self, groups: list[tuple[str, str]]) -> list[tuple[str, dict[int, int]]] | None:
        def fetch() -> list[tuple[str, dict[int, int]]]:
            reader, admin = self._kafka()
            out = []
            for group, topic in groups:
                out.append((topic, admin.group_offsets(group, topic, reader.partitions(topic))))
            return out

        result = await self._kafka_call(fetch)
        return None if result is None else list(result)

    async def _topic_size(self, topic: str) -> int | None:
        def count() -> int:
            reader, _ = self._kafka()
            return sum(m.high - m.low for m in reader.watermarks(topic).values())

        result = await self._kafka_call(count)
        return None if result is None else int(result)
