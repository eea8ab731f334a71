"""Counters a caller can export to its own metrics system; this package depends on none.

``Client.stats()`` returns a :class:`Stats` snapshot; ``on_stats=`` receives one every
``stats_interval_s``. Gauges (spool depth, queued, in flight, tracking) are read at snapshot time;
counters only grow.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Stats:
    spool_depth: int  # rides in the spool file (not yet finished with)
    queued: int  # rides waiting for a request
    in_flight: int  # rides in the request being sent
    tracking: int  # accepted rides whose final state is not known yet
    held: int  # rides that failed in this client but stay in the spool for the next one
    requests: int  # HTTP POST attempts
    retries: int  # POST attempts after the first of a request
    replayed: int  # answers the API replayed for an Idempotency-Key it had seen
    polls: int  # tracking GETs
    outcomes: dict[str, int] = field(default_factory=dict)  # by kind
    superseded: int = 0
    tracking_delay_count: int = 0
    tracking_delay_p50_s: float | None = None
    tracking_delay_p95_s: float | None = None
    tracking_delay_max_s: float | None = None


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class StatsRecorder:
    """Thread-safe counters; the tracking delays keep the last 10,000 values for quantiles."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.replayed = 0
        self.polls = 0
        self.superseded = 0
        self.held = 0
        self.in_flight = 0
        self.outcomes: Counter[str] = Counter()
        self._delays: deque[float] = deque(maxlen=10_000)
        self._delay_count = 0
        self._delay_max: float | None = None

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def outcome(self, kind: str, superseded: bool, delay_s: float | None, held: bool) -> None:
        with self._lock:
            self.outcomes[kind] += 1
            self.superseded += superseded
            self.held += held
            if delay_s is not None:
                self._delays.append(delay_s)
                self._delay_count += 1
                self._delay_max = delay_s if self._delay_max is None else max(self._delay_max, delay_s)

    def snapshot(self, spool_depth: int, queued: int, tracking: int) -> Stats:
        with self._lock:
            ordered = sorted(self._delays)
            return Stats(
                spool_depth=spool_depth,
                queued=queued,
                in_flight=self.in_flight,
                tracking=tracking,
                held=self.held,
                requests=self.requests,
                retries=self.retries,
                replayed=self.replayed,
                polls=self.polls,
                outcomes=dict(self.outcomes),
                superseded=self.superseded,
                tracking_delay_count=self._delay_count,
                tracking_delay_p50_s=_quantile(ordered, 0.5),
                tracking_delay_p95_s=_quantile(ordered, 0.95),
                tracking_delay_max_s=self._delay_max,
            )
