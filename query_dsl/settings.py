"""Where the query DSL finds its backends and the limits it enforces (``XRIDES_*`` variables).

The names it shares with other processes (``pg_dsn``, ``es_url``, ``es_rides_prefix``,
``hot_days``, ``s3_*``, ``local_zone``, ``kafka_bootstrap``, the topic and group names) mean the
same thing there; defaults work with the local stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from query_dsl.guards import Limits
from xrides.topics import RIDES, RIDES_ES, RIDES_ES_DLQ


@dataclass(frozen=True, slots=True)
class QuerySettings:
    SECRETS: ClassVar[tuple[str, ...]] = ("s3_secret_key",)

    pg_dsn: str = "postgresql://xrides:xrides@127.0.0.1:15432/xrides"
    pg_replica_dsn: str = ""  # a read replica for queries; empty: pg_dsn
    es_url: str = "http://127.0.0.1:19200"
    es_rides_prefix: str = "rides-"  # daily indices <prefix>YYYY.MM.DD (UTC days of the pickup)
    hot_days: int = 60  # Elasticsearch holds the rides of the last hot_days days
    s3_endpoint: str = "http://127.0.0.1:19000"
    s3_access_key: str = "xrides"
    s3_secret_key: str = "xrides-secret"  # noqa: S105 - the local stack's; deployments set it
    s3_bucket: str = "xrides-archive"
    s3_region: str = "us-east-1"  # the local S3 server's; a deployment names its own region
    archive_prefix: str = "rides"  # Parquet under s3://<bucket>/<prefix>/dt=YYYY-MM-DD/
    # The zone hour_of_day, day_of_week and is_weekend are computed in: the Flink job's (same variable).
    local_zone: str = "Asia/Kolkata"
    query_pg_table: str = "cab_rides"
    query_pg_retention_days: int = 0  # 0: PostgreSQL keeps the full history (auto never needs the archive)
    query_pg_pool_size: int = 4
    query_timeout_s: float = 30.0
    query_max_groups: int = 10_000  # groups per level of a nested aggregation (geohash queries)
    query_max_rows: int = 10_000
    query_es_request_cache: bool = True  # Elasticsearch's shard cache of aggregations (off to benchmark)
    # Cost checks before a query runs (query_dsl/cost.py): refused with 400 and the estimate.
    query_cost_check: bool = True
    query_pg_max_cost: float = 20_000_000.0  # PostgreSQL EXPLAIN's total cost
    query_es_max_groups: int = 200_000  # groups a composite aggregation may read, page by page
    query_es_max_scan_rows: int = 1_000_000  # rides a scan may read (customer and driver fields)
    query_archive_max_bytes: int = 20 * 1024**3  # Parquet bytes one archive query may read
    query_duckdb_memory_mb: int = 1024  # DuckDB's memory_limit per archive query (spills past it)
    query_duckdb_threads: int = 2
    # Freshness in every answer (query_dsl/freshness.py): the newest ride, consumer lag, dead letters.
    query_freshness: bool = True
    query_freshness_cache_s: float = 10.0
    kafka_bootstrap: str = "127.0.0.1:19092"  # empty: consumer lag is not reported
    rides_topic: str = RIDES.name
    rides_es_topic: str = RIDES_ES.name
    rides_es_dlq_topic: str = RIDES_ES_DLQ.name
    persister_group_id: str = "xrides-persister"  # its offsets are in PostgreSQL's consumer_offsets
    flink_group_id: str = "xrides-flink-rides"
    indexer_group_id: str = "xrides-es-indexer"

    @property
    def limits(self) -> Limits:
        return Limits(self.query_max_groups, self.query_max_rows, self.query_timeout_s)

    @property
    def query_dsn(self) -> str:
        return self.pg_replica_dsn or self.pg_dsn
