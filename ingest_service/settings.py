"""The API's settings: ``XRIDES_*`` variables, defaults that work with the local stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xrides.topics import REFUSED, REQUESTS, RIDES


@dataclass(frozen=True, slots=True)
class ApiSettings:
    SECRETS: ClassVar[tuple[str, ...]] = ("api_key", "api_key_hashes", "s3_secret_key")

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_public_url: str = ""  # base of status_url links; empty: relative links (/v1/requests/...)
    kafka_bootstrap: str = "127.0.0.1:19092"
    pg_dsn: str = "postgresql://xrides:xrides@127.0.0.1:15432/xrides"
    # a streaming replica for reads that may lag a moment (tracking); empty: the primary
    pg_replica_dsn: str = ""
    rides_topic: str = RIDES.name
    requests_topic: str = REQUESTS.name  # batch manifests (tracking)
    refused_topic: str = REFUSED.name  # refused rides with their errors: the quarantine's source
    local_zone: str = "Asia/Kolkata"  # zone of dates sent without an offset
    # Limits
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch_items: int = 1000
    max_in_flight: int = 4096  # concurrent requests; over it: 503 + Retry-After
    delivery_timeout_ms: int = 5000  # Kafka must acknowledge within this, else 503
    read_timeout_s: float = 10.0  # a client that sends its body slower than this is cut off
    rate_limit_per_s: float = 5000.0  # rides per second per API key (token bucket)
    rate_limit_burst: float = 20000.0
    idempotency_ttl_s: int = 24 * 3600
    idempotency_max_entries: int = 500_000
    # "postgres": idempotency keys and rate limits shared by every API process through PostgreSQL
    # (several processes behind a balancer: ingest_service/shared.py); empty: this process's memory
    shared_limits: str = ""
    # Auth: comma-separated ``id:scope+scope:sha256hex`` entries; the dev key comes from api_key.
    api_key_hashes: str = ""
    api_key: str = ""
    # A file of key entries (one per line, same format plus options: ingest_service/auth.py),
    # re-read when it changes (checked every api_keys_reload_s) or on SIGHUP: rotation without a
    # restart. Request signing: a signed request's timestamp must be within signature_window_s.
    api_keys_file: str = ""
    api_keys_reload_s: float = 2.0
    signature_window_s: float = 300.0
    # HTTPS: both set = the API serves TLS 1.2+ only, with this PEM certificate chain and key.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    log_level: str = "INFO"
    # The stores GET /v1/health checks (the query DSL runs in the query service, not here).
    es_url: str = "http://127.0.0.1:19200"
    s3_endpoint: str = "http://127.0.0.1:19000"
    s3_access_key: str = "xrides"
    s3_secret_key: str = "xrides-secret"  # noqa: S105 - the local stack's; real ones come from the environment
    s3_bucket: str = "xrides-archive"
    # POST /v1/query and /v1/query/explain are forwarded to the query service (query_service/); the
    # wait covers its longest query (its XRIDES_QUERY_TIMEOUT_S, 30 s) and a margin.
    query_url: str = "http://127.0.0.1:9107"
    query_proxy_timeout_s: float = 45.0
    # GET /v1/health: the platform processes it asks (``name=url,...``; the launcher writes the local
    # stack's into .stack/env) and the time each check may take.
    health_peers: str = ""
    health_timeout_s: float = 2.0
