"""Back-pressure: a per-key token bucket (rides per second) and a bound on requests in flight."""

from __future__ import annotations

import math
import time

from xrides.errors import Overloaded, RateLimited


class TokenBucket:
    """Rides per second for one client; a batch of n rides takes n tokens."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = time.monotonic()

    def take(self, n: int) -> float:
        """Take n tokens; return the tokens left, or raise RateLimited with the wait needed."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if n > self.burst:
            raise RateLimited(f"{n} rides exceed the burst limit of {self.burst:g}", retry_after_s=1)
        if self.tokens < n:
            wait = math.ceil((n - self.tokens) / self.rate)
            raise RateLimited(
                "rate limit exceeded", retry_after_s=max(1, wait), limit=self.burst, remaining=0
            )
        self.tokens -= n
        return self.tokens


class RateLimiter:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, client: str, n: int, rate: float | None = None, burst: float | None = None) -> float:
        """Take from ``client``'s bucket; ``rate``/``burst`` are that key's own limits (default: ours).

        A key whose limits change (the keys file was reloaded) keeps its tokens, capped at the new burst.
        """
        rate = rate or self.rate
        burst = burst or self.burst
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(rate, burst)
        elif bucket.rate != rate or bucket.burst != burst:
            bucket.rate, bucket.burst = rate, burst
            bucket.tokens = min(bucket.tokens, burst)
        return bucket.take(n)


class InFlight:
    """Counts requests in progress; refuses new ones past the bound instead of queueing forever."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    def enter(self) -> None:
        if self.current >= self.limit:
            raise Overloaded("too many requests in flight", retry_after_s=1)
        self.current += 1

    def leave(self) -> None:
        self.current -= 1
