"""Where the query DSL finds its backends and the limits it enforces (``XRIDES_*`` variables).

The names it shares with other processes (``pg_dsn``, ``es_url``, ``es_rides_prefix``,
``hot_days``, ``s3_*``) mean the same thing there; defaults work with the local stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from query_dsl.guards import Limits


@dataclass(frozen=True, slots=True)
class QuerySettings:
    SECRETS: ClassVar[tuple[str, ...]] = ("s3_secret_key",)

    pg_dsn: str = "postgresql://xrides:xrides@127.0.0.1:15432/xrides"
    es_url: str = "http://127.0.0.1:19200"
    es_rides_prefix: str = "rides-"  # daily indices <prefix>YYYY.MM.DD (UTC days of the pickup)
    hot_days: int = 60  # Elasticsearch holds the rides of the last hot_days days
    s3_endpoint: str = "http://127.0.0.1:19000"
    s3_access_key: str = "xrides"
    s3_secret_key: str = "xrides-secret"  # noqa: S105 - the local stack's; deployments set it
    s3_bucket: str = "xrides-archive"
    archive_prefix: str = "rides"  # Parquet under s3://<bucket>/<prefix>/dt=YYYY-MM-DD/
    query_pg_table: str = "cab_rides"
    query_pg_retention_days: int = 0  # 0: PostgreSQL keeps the full history (auto never needs the archive)
    query_timeout_s: float = 30.0
    query_max_groups: int = 10_000
    query_max_rows: int = 10_000
    query_es_request_cache: bool = True  # Elasticsearch's shard cache of aggregations (off to benchmark)

    @property
    def limits(self) -> Limits:
        return Limits(self.query_max_groups, self.query_max_rows, self.query_timeout_s)
