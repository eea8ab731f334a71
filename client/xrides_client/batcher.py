"""When a batch is cut: by count, by bytes, by time (linger), or at once when flushing.

Two rides of the same booking never share a batch: the API gives every ride of a batch the same
version, and the persister keeps the highest version of a booking, so two versions in one batch
would leave it to chance which one is kept. Cutting the batch at the repeat keeps the later ride in
a later request, which (one request at a time) the API accepts later, with a higher version.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from xrides_client.outcomes import Handle, Outcome, OutcomeKind


@dataclass(slots=True)
class Pending:
    """A ride in memory, waiting for (or in) a request."""

    spool_id: int
    body: bytes  # the exact JSON bytes in the spool
    booking_id: object
    handle: Handle
    enqueued: float = 0.0  # monotonic; starts the linger clock
    attempts: int = 0  # answers that said "retry" for this ride, across requests

    def outcome(self, kind: OutcomeKind, **details: Any) -> Outcome:
        return Outcome(
            kind,
            self.booking_id,
            self.spool_id,
            attempts=self.attempts,
            recovered=self.handle.recovered,
            **details,
        )


def encode_batch(items: Iterable[Pending]) -> bytes:
    return b"[" + b",".join(p.body for p in items) + b"]"


class Batcher:
    def __init__(self, max_count: int, max_bytes: int, linger_s: float, single: bool = False) -> None:
        self.max_count = 1 if single else max_count
        self.max_bytes = max_bytes
        self.linger_s = 0.0 if single else linger_s
        self._queue: deque[Pending] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: Pending) -> None:
        self._queue.append(item)
        self._bytes += len(item.body) + 1

    def put_back(self, items: list[Pending]) -> None:
        """Return rides to the front, in their order: they are older than anything queued."""
        for item in reversed(items):
            self._queue.appendleft(item)
            self._bytes += len(item.body) + 1

    def drain(self) -> list[Pending]:
        items = list(self._queue)
        self._queue.clear()
        self._bytes = 0
        return items

    def shrink(self, count: int, size: int) -> None:
        """The API said 413 to ``count`` rides in ``size`` bytes: halve the count, for the rest of this
        client (413 is the item limit or the byte limit; half the rides is about half the bytes)."""
        self.max_count = max(1, min(self.max_count, count // 2))
        self.max_bytes = max(1, min(self.max_bytes, size - 1))

    def ready(self, now: float, flushing: bool) -> bool:
        if not self._queue:
            return False
        return (
            flushing
            or len(self._queue) >= self.max_count
            or self._bytes + 1 >= self.max_bytes
            or now - self._queue[0].enqueued >= self.linger_s
        )

    def deadline(self) -> float | None:
        """When the oldest ride's linger ends (monotonic), or None when nothing waits."""
        return self._queue[0].enqueued + self.linger_s if self._queue else None

    def take(self, now: float, flushing: bool = False) -> list[Pending]:
        """The next batch, or [] when none is due yet."""
        if not self.ready(now, flushing):
            return []
        taken: list[Pending] = []
        size = 1  # the closing bracket; each ride adds its bytes and a separator (or the opening one)
        bookings: set[object] = set()
        while self._queue and len(taken) < self.max_count:
            item = self._queue[0]
            if taken and size + len(item.body) + 1 > self.max_bytes:
                break
            key = item.booking_id if isinstance(item.booking_id, int | str) else None
            if key is not None and key in bookings:
                break
            if key is not None:
                bookings.add(key)
            taken.append(self._queue.popleft())
            size += len(item.body) + 1
            self._bytes -= len(item.body) + 1
        return taken
