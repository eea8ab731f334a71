"""What handlers share: the services built at start-up, and the JSON response helper."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from aiohttp import web

from ingest_service.auth import KeyRing
from ingest_service.idempotency import IdempotencyStore
from ingest_service.limits import InFlight, RateLimiter
from ingest_service.positions import KafkaPositions
from ingest_service.producer import RideProducer
from ingest_service.settings import ApiSettings


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
    pool: asyncpg.Pool | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)


SERVICES = web.AppKey("services", Services)


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )
