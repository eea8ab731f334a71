"""The query service's settings: the query DSL's (same ``XRIDES_*`` names) plus its own port, the API
keys it shares with the ingest API, and its limits. Defaults work with the local stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from query_dsl.settings import QuerySettings


@dataclass(frozen=True, slots=True)
class QueryServiceSettings(QuerySettings):
    SECRETS: ClassVar[tuple[str, ...]] = ("s3_secret_key", "api_key", "api_key_hashes")

    query_host: str = "127.0.0.1"
    query_port: int = 9107
    # Queries running at once; past it a request is answered 429 with Retry-After at once (a queue
    # would only hold clients past their own timeouts: a query takes seconds, not milliseconds).
    query_max_concurrent: int = 4
    query_retry_after_s: int = 2
    query_max_body_bytes: int = 256 * 1024
    # The same keys as the API (xrides/auth.py): the same variables, so one rotation covers both.
    api_key_hashes: str = ""
    api_key: str = ""
    api_keys_file: str = ""
    api_keys_reload_s: float = 2.0
    signature_window_s: float = 300.0
    log_level: str = "INFO"

    @property
    def shutdown_timeout_s(self) -> float:
        """A stop waits this long for queries in flight: the longest one may take, and a margin."""
        return self.query_timeout_s + 5
