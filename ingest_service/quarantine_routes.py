"""``POST /v1/quarantine/replay`` (admin scope): re-validate quarantined rides and store the ones
the current contract accepts (xrides/quarantine.py), without asking the client to send them again.

Body: ``{"since": ISO 8601, "until": ISO 8601 (default now), "dry_run": false, "limit": 10000}``.
The answer counts what was considered, replayed and still refused, and maps each replayed
quarantine request id to the ride's new request id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ingest_service.body import JSON, media_type, parse_json, read_body
from ingest_service.context import SERVICES, Services, check_signature, json_response
from xrides.errors import BrokerUnavailable, MalformedBody, Unavailable
from xrides.quarantine import replay
from xrides.request_ids import Position


def _instant(body: dict[str, Any], name: str, default: datetime | None) -> datetime:
    value = body.get(name)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise MalformedBody(f"{name} must be an ISO 8601 timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedBody(f"{name} must be an ISO 8601 timestamp") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def post_replay(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    key = services.keys.authenticate(request.headers.get("Authorization"), ("admin",))
    media_type(request, (JSON,))
    raw = await read_body(request, 64 * 1024, services.settings.read_timeout_s)
    check_signature(request, key, raw)
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise MalformedBody("send an object: {since, until, dry_run, limit}")
    since = _instant(body, "since", None)
    until = _instant(body, "until", datetime.now(UTC))
    limit = body.get("limit", 10_000)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= 100_000:
        raise MalformedBody("limit must be an integer in 1..100000")
    pool = getattr(services.tracking, "pool", None)
    if pool is None:
        raise Unavailable(
            "PostgreSQL is not reachable; the quarantine cannot be replayed now", retry_after_s=5
        )

    async def send(messages: Sequence[tuple[bytes, bytes]]) -> list[Position]:
        return await _send_all(services, messages)

    async with pool.acquire() as conn:
        report = await replay(conn, send, since, until, services.zone, bool(body.get("dry_run")), limit)
    return json_response(report.as_dict())


async def _send_all(services: Services, messages: Sequence[tuple[bytes, bytes]]) -> list[Position]:
    results = await services.producer.send_many(services.settings.rides_topic, list(messages))
    positions = [r for r in results if isinstance(r, Position)]
    if len(positions) != len(results):  # nothing is marked replayed: the transaction rolls back
        raise BrokerUnavailable("Kafka did not acknowledge every replayed ride", retry_after_s=2)
    return positions


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/quarantine/replay", post_replay)
