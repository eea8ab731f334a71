"""The archiver's settings: ``XRIDES_*`` variables, defaults that work with the local stack.

The names it shares with other processes mean the same thing there: ``hot_days`` and
``reference_time`` with the Flink job (so a replay of old history archives what the job skipped),
``es_rides_prefix`` with the job and the query DSL, ``archive_prefix`` with the query DSL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from xrides.archive.store import StoreConfig
from xrides.window import reference_or_now


@dataclass(frozen=True, slots=True)
class ArchiverSettings:
    SECRETS: ClassVar[tuple[str, ...]] = ("s3_secret_key",)

    pg_dsn: str = "postgresql://xrides:xrides@127.0.0.1:15432/xrides"
    es_url: str = "http://127.0.0.1:19200"
    es_rides_prefix: str = "rides-"  # daily indices <prefix>YYYY.MM.DD (UTC days of the pickup)
    s3_endpoint: str = "http://127.0.0.1:19000"
    s3_access_key: str = "xrides"
    s3_secret_key: str = "xrides-secret"  # noqa: S105 - the local stack's; deployments set it
    s3_bucket: str = "xrides-archive"
    s3_region: str = "us-east-1"  # the local S3 server's; a deployment names its own region
    archive_prefix: str = "rides"  # s3://<bucket>/<prefix>/dt=YYYY-MM-DD/part-<generation>-<n>.parquet
    hot_days: int = 60  # days older than this (whole UTC days) are archived, then leave Elasticsearch
    reference_time: str = ""  # ISO 8601; empty = now. The same setting as the Flink job's.
    local_zone: str = "Asia/Kolkata"  # for the enriched documents a restore writes to Elasticsearch
    row_group_rows: int = 131_072  # Parquet row group size: a few MB of zstd columns per group
    file_max_rows: int = 2_000_000  # a day larger than this is split over several files
    max_days_per_run: int = 0  # 0 = no limit; a catch-up after a long outage can be spread out
    late_margin_s: int = 600  # receipts this much older than the last run are re-checked (in-flight commits)
    pg_retention_months: int = 0  # 0 = off; >0: drop monthly partitions older than this once archived
    interval_s: float = 3600.0  # `serve`: seconds between runs
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9104
    log_level: str = "INFO"

    def store_config(self) -> StoreConfig:
        return StoreConfig(
            self.s3_endpoint,
            self.s3_access_key,
            self.s3_secret_key,
            self.s3_bucket,
            self.archive_prefix,
            self.s3_region,
        )

    def reference(self) -> datetime:
        """The moment "now" means for the hot window (a fixed time when replaying history)."""
        return reference_or_now(self.reference_time)
