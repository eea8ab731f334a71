"""The reconciler's settings: ``XRIDES_*`` variables, defaults that work with the local stack.

Names it shares with other processes mean the same there: ``hot_days`` and ``reference_time``
with the Flink job and the archiver (which days Elasticsearch must hold, which the archive),
``es_rides_prefix``, ``archive_prefix`` and the S3 fields with the archiver, ``rides_topic`` with
the API and the persister; ``persister_group_id`` is the persister's ``group_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import ClassVar

from xrides.topics import RIDES
from xrides.window import cutoff_day, reference_or_now


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    SECRETS: ClassVar[tuple[str, ...]] = ("s3_secret_key",)

    pg_dsn: str = "postgresql://xrides:xrides@127.0.0.1:15432/xrides"
    kafka_bootstrap: str = "127.0.0.1:19092"
    rides_topic: str = RIDES.name
    persister_group_id: str = "xrides-persister"  # whose offsets in consumer_offsets mark "consumed"
    es_url: str = "http://127.0.0.1:19200"
    es_rides_prefix: str = "rides-"
    s3_endpoint: str = "http://127.0.0.1:19000"
    s3_access_key: str = "xrides"
    s3_secret_key: str = "xrides-secret"  # noqa: S105 - the local stack's; deployments set it
    s3_bucket: str = "xrides-archive"
    s3_region: str = "us-east-1"  # the local S3 server's; a deployment names its own region
    archive_prefix: str = "rides"
    hot_days: int = 60
    reference_time: str = ""  # ISO 8601; empty = now (as the Flink job's and the archiver's)
    # Days reconciled: `serve` covers lookback_days back to future_days ahead (pickups can be
    # booked ahead); its "7d" window is the last recent_days of them plus the future days.
    lookback_days: int = 90
    recent_days: int = 7
    future_days: int = 7
    # A ride accepted less than settle_s ago may still be on its way: it is counted, never a gap.
    settle_s: float = 300.0
    max_ids: int = 50  # booking ids listed per day and difference
    max_tail_messages: int = 50_000  # unconsumed messages read per run to learn their days
    max_dead_letters: int = 50_000
    interval_s: float = 300.0  # `serve`: the recent days every interval...
    full_interval_s: float = 3600.0  # ...every day of the lookback this often
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9105
    log_level: str = "INFO"

    def reference(self) -> datetime:
        """The moment "now" means for the hot window (a fixed time when replaying history)."""
        return reference_or_now(self.reference_time)

    def today(self) -> date:
        return self.reference().astimezone(UTC).date()

    def cutoff_day(self) -> date:
        """Days strictly before this are outside the hot window (the archiver's ``cutoff_day``)."""
        return cutoff_day(self.reference(), self.hot_days)

    def total_days(self) -> tuple[date, date]:
        today = self.today()
        return today - timedelta(days=self.lookback_days - 1), today + timedelta(days=self.future_days)

    def recent_window(self) -> tuple[date, date]:
        today = self.today()
        return today - timedelta(days=self.recent_days - 1), today + timedelta(days=self.future_days)
