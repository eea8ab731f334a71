"""What handlers share: the services built at start-up, and the JSON response helper."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from aiohttp import web

from ingest_service.auth import ApiKey, KeyRing
from ingest_service.idempotency import IdempotencyStore
from ingest_service.limits import InFlight, RateLimiter
from ingest_service.positions import KafkaPositions
from ingest_service.producer import RideProducer
from ingest_service.settings import ApiSettings
from ingest_service.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureChecker


@dataclass
class Services:
    """Everything a handler needs, built once at start-up."""

    settings: ApiSettings
    zone: ZoneInfo
    producer: RideProducer
    positions: KafkaPositions
    keys: KeyRing
    limiter: RateLimiter
    in_flight: InFlight
    idempotency: IdempotencyStore
    signatures: SignatureChecker
    pool: asyncpg.Pool | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)


SERVICES = web.AppKey("services", Services)


def check_signature(request: web.Request, key: ApiKey, body: bytes) -> None:
    """The HMAC signing rules for ``key`` (ingest_service/signing.py), over the body as received."""
    request.app[SERVICES].signatures.check(
        key,
        request.method,
        request.raw_path,
        body,
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
    )


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )
