"""What handlers share: the services built at start-up, the I/O edges as protocols, and the JSON
response helper.

The edges (the Kafka producer, Kafka positions, the tracking store) are protocols so the API's
handlers run against in-memory ones in unit tests (tests/unit/test_api_handlers.py) and against
the real ones (xrides/kafka, xrides/tracking.py) everywhere else; ``create_app`` takes them ready
made, it never builds a client itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from ingest_service.auth import ApiKey, KeyRing
from ingest_service.limits import InFlight
from ingest_service.positions import BatchItems
from ingest_service.settings import ApiSettings
from ingest_service.shared import IdempotencyKeys, RateLimits, SharedState
from ingest_service.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureChecker
from xrides.quarantine import Refusal
from xrides.request_ids import Position
from xrides.tracking import ItemState, RefusalState

Message = tuple[bytes | None, bytes]


class RideLog(Protocol):
    """Where accepted rides are made durable (Kafka, acks=all): each message's position, or why not."""

    async def start(self, topics: Sequence[str]) -> None: ...
    def ready(self, topic: str) -> bool: ...
    async def send_many(
        self,
        topic: str,
        messages: Sequence[Message],
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> list[Position | BaseException]: ...
    async def close(self) -> None: ...


class Positions(Protocol):
    """Reads of the log by position: request ids are positions."""

    refused_topic: str

    async def exists(self, topic: str, position: Position) -> bool: ...
    async def ride_exists(self, position: Position) -> bool: ...
    async def read(self, topic: str, position: Position) -> bytes | None: ...
    async def batch_items(self, position: Position) -> BatchItems | None: ...
    async def refusal(self, position: Position) -> Refusal | None: ...
    async def close(self) -> None: ...


class TrackingStore(Protocol):
    """What the persister recorded: receipts per position, and the stored version of a ride."""

    async def connect_forever(self) -> None: ...
    async def item_states(self, positions: Sequence[Position]) -> dict[Position, ItemState]: ...
    async def latest_ride(self, booking_id: int) -> dict[str, Any] | None: ...
    async def refusals(self, positions: Sequence[Position]) -> dict[Position, RefusalState]: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


@dataclass
class Edges:
    """The API's I/O: built by the caller of ``create_app`` (real or in-memory)."""

    producer: RideLog
    positions: Positions
    tracking: TrackingStore


@dataclass
class Services:
    """Everything a handler needs, built once at start-up."""

    settings: ApiSettings
    zone: ZoneInfo
    producer: RideLog
    positions: Positions
    tracking: TrackingStore
    keys: KeyRing
    limiter: RateLimits
    in_flight: InFlight
    idempotency: IdempotencyKeys
    signatures: SignatureChecker
    shared_state: SharedState | None = None  # idempotency keys and rate limits in PostgreSQL
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
