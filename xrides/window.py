"""The hot window, one definition for the Flink job, the archiver and the reconciler.

Elasticsearch holds the pickups of the last ``hot_days`` days before a reference time ("now", or
a fixed ISO 8601 moment when history is replayed). A UTC day wholly before the window's oldest
moment is archived and leaves Elasticsearch; the job does not index its rides.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def parse_reference(text: str) -> datetime | None:
    """The reference time of a ``reference_time`` setting: None for "now"; a naive time is UTC."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def reference_or_now(text: str) -> datetime:
    return parse_reference(text) or datetime.now(UTC)


def oldest_hot(reference: datetime, hot_days: int) -> datetime:
    """Pickups at or after this moment are in the hot window."""
    return reference - timedelta(days=hot_days)


def cutoff_day(reference: datetime, hot_days: int) -> date:
    """UTC days strictly before this one lie wholly outside the hot window."""
    return oldest_hot(reference, hot_days).astimezone(UTC).date()
