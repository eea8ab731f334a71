"""What became of one ride, and the handle a caller waits on for it.

An outcome is final: once a handle holds one it never changes. The kinds:

- ``stored``: the platform stored the ride in PostgreSQL (``superseded`` when a newer version of the
  same booking was already stored: the ride was processed, the newer data stays);
- ``refused``: the platform refused the ride; ``reason``/``error_code``/``errors`` are its own words;
- ``failed``: the ride did not reach a final state on the platform (attempts exhausted, the key was
  refused, or the platform reported a failure after accepting it); ``kept_in_spool`` says whether
  the ride is still in the spool, where a client started later on the same spool resends it;
- ``accepted``: the platform acknowledged the ride (it is durable in Kafka) and tracking is off, or
  tracking stopped before a final state (``reason`` says why).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from xrides_client.errors import ClientClosedError

OutcomeKind = Literal["stored", "refused", "failed", "accepted"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    booking_id: object
    spool_id: int
    request_id: str | None = None  # the ride's own id (r<partition>-<offset>) once accepted
    batch_request_id: str | None = None  # the batch's id (b<partition>-<offset>), when there is one
    superseded: bool = False
    stored_at: str | None = None
    tracked_after_s: float | None = None  # acceptance -> final state, as seen by this client
    reason: str | None = None
    error_code: str | None = None
    errors: tuple[Mapping[str, Any], ...] = field(default=())
    http_status: int | None = None
    attempts: int = 0
    kept_in_spool: bool = False
    recovered: bool = False  # the ride came from the spool of an earlier client

    @property
    def ok(self) -> bool:
        """True when the platform holds the ride (stored, or acknowledged with tracking off)."""
        return self.kind in ("stored", "accepted")


class Handle:
    """A ride sent through a client; its outcome arrives from the client's I/O thread."""

    __slots__ = ("_closed", "_done", "_listeners", "_lock", "_outcome", "booking_id", "recovered", "spool_id")

    def __init__(self, spool_id: int, booking_id: object, recovered: bool = False) -> None:
        self.spool_id = spool_id
        self.booking_id = booking_id
        self.recovered = recovered
        self._outcome: Outcome | None = None
        self._closed = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Handle], None]] = []

    def __repr__(self) -> str:
        state = self._outcome.kind if self._outcome else ("closed" if self._closed else "pending")
        return f"<Handle spool_id={self.spool_id} booking_id={self.booking_id!r} {state}>"

    @property
    def outcome(self) -> Outcome | None:
        """The final outcome, or None while the ride is still on its way."""
        return self._outcome

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Outcome:
        """Block until the outcome is final.

        Raises TimeoutError when ``timeout`` passes first, and ClientClosedError when the client
        was closed before the ride finished (it is still in the spool).
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"no outcome for spool ride {self.spool_id} within {timeout} s")
        if self._outcome is None:
            raise ClientClosedError(
                f"the client closed before spool ride {self.spool_id} finished; it stays in the spool"
            )
        return self._outcome

    def add_listener(self, listener: Callable[[Handle], None]) -> None:
        """Call ``listener(handle)`` once the handle is done (at once if it already is)."""
        with self._lock:
            if not self._done.is_set():
                self._listeners.append(listener)
                return
        listener(self)

    def _finish(self, outcome: Outcome | None) -> bool:
        with self._lock:
            if self._done.is_set():
                return False
            self._outcome = outcome
            self._closed = outcome is None
            self._done.set()
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(self)
        return True
