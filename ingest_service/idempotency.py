"""Safe retries: the first answer to an ``Idempotency-Key`` is replayed for the window's length.

Keys live in this process's memory, scoped to the API key, for ``idempotency_ttl_s`` (24 h by
default) and at most ``idempotency_max_entries`` (oldest evicted first). A retry that arrives
while the first request is still in progress waits for it. The same key with a different body is
a 409. Beyond the window, or after a restart, a retried ride is written again; that is still safe
downstream, because the persister keys rides by booking id and an identical version changes no
row (see docs/ingest-api.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from xrides.errors import IdempotencyConflict


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes


@dataclass(slots=True)
class _Entry:
    body_hash: bytes
    created: float
    result: asyncio.Future[StoredResponse]


class IdempotencyStore:
    def __init__(self, ttl_s: int, max_entries: int) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def _expire(self) -> None:
        cutoff = time.monotonic() - self._ttl
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.created >= cutoff and len(self._entries) <= self._max:
                break
            del self._entries[key]

    def begin(self, client: str, key: str, body: bytes) -> asyncio.Future[StoredResponse] | None:
        """Return the earlier request's (maybe pending) answer, or None after claiming the key."""
        self._expire()
        digest = hashlib.sha256(body).digest()
        entry = self._entries.get((client, key))
        if entry is not None:
            if entry.body_hash != digest:
                raise IdempotencyConflict("this Idempotency-Key was used with a different body")
            return entry.result
        future: asyncio.Future[StoredResponse] = asyncio.get_running_loop().create_future()
        self._entries[(client, key)] = _Entry(digest, time.monotonic(), future)
        return None

    def finish(self, client: str, key: str, response: StoredResponse | None) -> None:
        """Record the answer; None (a retriable failure) releases the key so a retry runs again."""
        entry = self._entries.get((client, key))
        if entry is None:
            return
        if response is None:
            del self._entries[(client, key)]
            if not entry.result.done():
                entry.result.cancel()
        elif not entry.result.done():
            entry.result.set_result(response)
