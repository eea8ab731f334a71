"""Every tuning knob of a client, in one validated value object.

``Client(url, key, batch_size=200)`` and ``Client(url, key, options=Options(batch_size=200))`` are the
same thing: the keyword form is applied on top of ``options`` with :func:`dataclasses.replace`, so
the names and defaults exist once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

# The API refuses batches over 1,000 rides (XRIDES_MAX_BATCH_ITEMS) and bodies over 4 MiB
# (XRIDES_MAX_BODY_BYTES); the client stays below both by default and never goes over the item limit.
API_MAX_BATCH_ITEMS = 1000
DEFAULT_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Options:
    batch: bool = True  # False: one POST /v1/rides per ride
    batch_size: int = 500
    batch_bytes: int = DEFAULT_BATCH_BYTES
    linger_s: float = 0.05  # how long a partial batch waits for more rides
    max_attempts: int = 8  # per request (and per ride across re-batches of retriable items)
    max_retry_time_s: float = 300.0  # per request, from its first attempt
    backoff_base_s: float = 0.2
    backoff_max_s: float = 30.0
    timeout_s: float = 30.0  # one HTTP exchange (connect, send, answer)
    track: bool = True  # False: ``accepted`` is final and nothing is polled
    poll_min_s: float = 0.2
    poll_max_s: float = 2.0
    track_timeout_s: float = 600.0  # after this, an accepted ride ends as ``accepted`` with a reason
    spool_sync: Literal["full", "normal"] = "full"
    max_queue: int = 100_000  # rides waiting for a batch before ``send`` blocks (back-pressure)
    outcome_buffer: int = 100_000  # finished outcomes kept for ``outcomes()``
    stats_interval_s: float = 10.0  # how often ``on_stats`` is called, when given

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= API_MAX_BATCH_ITEMS:
            raise ValueError(f"batch_size must be 1..{API_MAX_BATCH_ITEMS}, got {self.batch_size}")
        positive = {
            "batch_bytes": self.batch_bytes,
            "max_attempts": self.max_attempts,
            "timeout_s": self.timeout_s,
            "poll_min_s": self.poll_min_s,
            "max_queue": self.max_queue,
            "outcome_buffer": self.outcome_buffer,
            "stats_interval_s": self.stats_interval_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in {
            "linger_s": self.linger_s,
            "max_retry_time_s": self.max_retry_time_s,
            "backoff_base_s": self.backoff_base_s,
            "track_timeout_s": self.track_timeout_s,
        }.items():
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be at least backoff_base_s")
        if self.poll_max_s < self.poll_min_s:
            raise ValueError("poll_max_s must be at least poll_min_s")
        if self.spool_sync not in ("full", "normal"):
            raise ValueError(f"spool_sync must be 'full' or 'normal', got {self.spool_sync!r}")


class OptionChanges(TypedDict, total=False):
    """The keyword form of :class:`Options` (a test checks the two list the same names)."""

    batch: bool
    batch_size: int
    batch_bytes: int
    linger_s: float
    max_attempts: int
    max_retry_time_s: float
    backoff_base_s: float
    backoff_max_s: float
    timeout_s: float
    track: bool
    poll_min_s: float
    poll_max_s: float
    track_timeout_s: float
    spool_sync: Literal["full", "normal"]
    max_queue: int
    outcome_buffer: int
    stats_interval_s: float
