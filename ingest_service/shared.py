"""Idempotency keys and rate limits that hold across API processes.

One API process keeps both in memory (ingest_service/idempotency.py, ingest_service/limits.py).
Behind a balancer (the cluster profile; ``XRIDES_SHARED_LIMITS=postgres``) a retry may land on the
other process, and a client's requests are spread over both; then both live in PostgreSQL
(migration 0006: the answers in ``api_idempotency``, the buckets in the unlogged
``api_rate_buckets``), reached through the owner's functions, one round trip each:

- a request with an ``Idempotency-Key``: ``api_idempotency_begin`` (claim, or read the first answer)
  and ``api_idempotency_finish`` (record it); requests without a key pay nothing;
- every ride request: ``api_take_tokens`` (refill and take, atomically under the bucket's row lock).

The connection runs with ``synchronous_commit = off``: an answer recorded a moment before a
PostgreSQL crash may be forgotten, and then a retry is written again, which the persister's
version guard makes harmless (the same fallback as a restart of one process, docs/ingest-api.md).

Ingest does not depend on PostgreSQL. While it is unreachable both fall back to this process's
memory (``xrides_api_shared_state_fallbacks_total`` counts it): keys and buckets are per process
then, as in the single profile, and nothing is refused for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time

import asyncpg
from prometheus_client import Counter, Histogram

from ingest_service.idempotency import IdempotencyStore, StoredResponse
from ingest_service.limits import RateLimiter
from xrides.errors import IdempotencyConflict, RateLimited

log = logging.getLogger("ingest_service.shared")

FALLBACKS = Counter(
    "xrides_api_shared_state_fallbacks",
    "Idempotency or rate-limit decisions made in this process's memory because PostgreSQL was unreachable",
    ["what"],
)
SHARED_SECONDS = Histogram(
    "xrides_api_shared_state_seconds",
    "Round trip of one shared idempotency or rate-limit call to PostgreSQL",
    ["call"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)

STALE_CLAIM_S = 30.0  # an answer still pending after this long belongs to a process that died
PENDING_POLL_S = 0.05
EXPIRE_EVERY_S = 600.0
_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class SharedState:
    """The PostgreSQL pool the API processes share their state through (opened in the background)."""

    def __init__(self, dsn: str, max_size: int = 4) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self.pool: asyncpg.Pool | None = None

    async def connect_forever(self, idempotency_ttl_s: float) -> None:
        """Open the pool (retrying), then expire old answers every ten minutes."""
        delay = 0.5
        while self.pool is None:
            try:
                self.pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._max_size,
                    command_timeout=5,
                    server_settings={"synchronous_commit": "off"},
                )
            except _ERRORS as exc:
                log.warning("shared state: PostgreSQL not reachable yet", extra={"error.message": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        while True:
            with contextlib.suppress(*_ERRORS):
                await self.pool.fetchval("SELECT api_idempotency_expire($1)", float(idempotency_ttl_s))
            await asyncio.sleep(EXPIRE_EVERY_S)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class IdempotencyKeys:
    """The first answer to an ``Idempotency-Key``, replayed to its retries: in PostgreSQL when
    ``shared`` is given (and reachable), else in this process's memory."""

    def __init__(self, local: IdempotencyStore, ttl_s: float, shared: SharedState | None = None) -> None:
        self.local = local
        self.ttl_s = float(ttl_s)
        self.shared = shared
        self._claimed_shared: set[tuple[str, str]] = set()

    async def begin(self, client: str, key: str, body: bytes) -> StoredResponse | None:
        """The earlier request's answer (waiting while it is in progress), or None: claimed, run it."""
        pool = self.shared.pool if self.shared else None
        if pool is not None:
            try:
                answer = await self._begin_shared(pool, client, key, hashlib.sha256(body).digest())
            except _ERRORS:
                FALLBACKS.labels("idempotency").inc()
            else:
                if answer is None:
                    self._claimed_shared.add((client, key))
                return answer
        earlier = self.local.begin(client, key, body)
        return None if earlier is None else await earlier

    async def _begin_shared(
        self, pool: asyncpg.Pool, client: str, key: str, digest: bytes
    ) -> StoredResponse | None:
        deadline = time.monotonic() + STALE_CLAIM_S + 5
        while True:
            started = time.perf_counter()
            row = await pool.fetchrow(
                "SELECT * FROM api_idempotency_begin($1, $2, $3, $4, $5)",
                client,
                key,
                digest,
                self.ttl_s,
                STALE_CLAIM_S,
            )
            SHARED_SECONDS.labels("idempotency_begin").observe(time.perf_counter() - started)
            if row is None:  # the function always returns a row; a missing one is a schema fault
                raise asyncpg.InterfaceError("api_idempotency_begin returned nothing")
            if row["claimed"]:
                return None
            if bytes(row["body_hash"]) != digest:
                raise IdempotencyConflict("this Idempotency-Key was used with a different body")
            if row["status"] is not None:
                return StoredResponse(int(row["status"]), bytes(row["body"]))
            if time.monotonic() > deadline:  # cannot happen unless clocks jump; do not hang a client
                raise TimeoutError("the first request with this Idempotency-Key is still in progress")
            await asyncio.sleep(PENDING_POLL_S)  # in progress on another process (or this one)

    async def finish(self, client: str, key: str, body: bytes, response: StoredResponse | None) -> None:
        """Record the answer; None (a retriable failure) releases the key so a retry runs again."""
        if (client, key) not in self._claimed_shared:
            self.local.finish(client, key, response)
            return
        self._claimed_shared.discard((client, key))
        pool = self.shared.pool if self.shared else None
        if pool is None:
            return
        status, stored = (response.status, response.body) if response is not None else (None, None)
        started = time.perf_counter()
        try:
            await pool.execute(
                "SELECT api_idempotency_finish($1, $2, $3, $4, $5)",
                client,
                key,
                hashlib.sha256(body).digest(),
                status,
                stored,
            )
        except _ERRORS:  # the claim expires as stale; a retry then runs again (harmless downstream)
            FALLBACKS.labels("idempotency_finish").inc()
        SHARED_SECONDS.labels("idempotency_finish").observe(time.perf_counter() - started)


class RateLimits:
    """Per-key token buckets: in PostgreSQL when ``shared`` is given (and reachable), else here."""

    def __init__(self, local: RateLimiter, shared: SharedState | None = None) -> None:
        self.local = local
        self.shared = shared

    async def take(self, client: str, n: int, rate: float | None = None, burst: float | None = None) -> float:
        """Take ``n`` tokens from ``client``'s bucket: the tokens left, or RateLimited with the wait."""
        pool = self.shared.pool if self.shared else None
        if pool is None:
            return self.local.take(client, n, rate, burst)
        rate = rate or self.local.rate
        burst = burst or self.local.burst
        if n > burst:
            raise RateLimited(f"{n} rides exceed the burst limit of {burst:g}", retry_after_s=1)
        started = time.perf_counter()
        try:
            left = await pool.fetchval(
                "SELECT api_take_tokens($1, $2, $3, $4)", client, float(n), burst, rate
            )
        except _ERRORS:
            FALLBACKS.labels("rate_limit").inc()
            return self.local.take(client, n, rate, burst)
        SHARED_SECONDS.labels("take_tokens").observe(time.perf_counter() - started)
        if left < 0:
            wait = math.ceil(-left / rate)
            raise RateLimited("rate limit exceeded", retry_after_s=max(1, wait), limit=burst, remaining=0)
        return float(left)
