"""How long to wait before the next attempt.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the retries of many
clients that failed together, so a recovering API is not hit by all of them at the same instant.
A ``Retry-After`` from the API is a floor: the API knows when it expects to have room again.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    jittered = (rng or random).uniform(0, ceiling)
    if retry_after_s is not None:
        return max(retry_after_s, jittered)
    return jittered


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
