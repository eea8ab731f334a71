"""POST handlers: one ride, a batch, and the prototype's ``/xride_data``.

A ride is answered 202 only after Kafka acknowledged its message (acks=all). A ride that breaks
the contract is answered 422 and kept: its body and every error go to the quarantine topic first
(xrides/quarantine.py), and the answer's ``request_id`` (``q<p>-<o>``) tracks it as ``refused``; a
later quarantine replay can store it without asking the client to send it again. Unknown fields
are kept with the ride and named in the answer's ``warnings``; a key with ``fields=strict`` refuses
them instead.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ingest_service.auth import ApiKey
from ingest_service.body import JSON, NDJSON, media_type, parse_json, read_body, split_ndjson
from ingest_service.context import SERVICES, Services, check_signature, json_response
from ingest_service.idempotency import StoredResponse
from ingest_service.metrics import (
    IDEMPOTENT_REPLAYS,
    QUARANTINED,
    REJECTS,
    RIDES_ACCEPTED,
    count_unknown_field,
)
from xrides.errors import BrokerUnavailable, MalformedBody, PayloadTooLarge, XRidesError
from xrides.quarantine import Refusal
from xrides.request_ids import Position, batch_request_id, refused_request_id, ride_request_id
from xrides.ride import Ride, RideEnvelope, RideValidationError, new_version, parse_ride
from xrides.ride.model import warnings_for

IDEMPOTENCY_HEADER = "Idempotency-Key"

log = logging.getLogger("ingest_service.rides")


def status_url(services: Services, request_id: str) -> str:
    base = services.settings.api_public_url.rstrip("/")
    return f"{base}/v1/requests/{request_id}"


def _booking_id_of(data: object) -> int | None:
    if isinstance(data, dict):
        value = data.get("booking_id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _validate(data: object, services: Services, key: ApiKey) -> Ride:
    try:
        ride = parse_ride(data, services.zone, strict=key.strict_fields)
    except RideValidationError as error:
        booking_id = _booking_id_of(data)
        if booking_id is not None:
            error.details["booking_id"] = booking_id
        raise
    for name in ride.extras or ():
        count_unknown_field(name)
    return ride


def _warnings(ride: Ride) -> list[dict[str, str]]:
    return [w.as_dict() for w in warnings_for(ride)]


async def _quarantine(
    services: Services, key: ApiKey, refused: list[tuple[bytes, RideValidationError, object]]
) -> list[Position | None]:
    """Keep refused rides (body, errors) on the quarantine topic; each one's position, or None when
    Kafka did not take it (the refusal is answered anyway: it is the client's to fix)."""
    if not refused:
        return []
    now = new_version()
    messages = []
    for body, error, data in refused:
        refusal = Refusal(now, body, [e.as_dict() for e in error.errors], _booking_id_of(data), key.key_id)
        messages.append((refusal.key(), refusal.encode()))
    try:
        results = await services.producer.send_many(services.settings.refused_topic, messages)
    except BrokerUnavailable:
        results = [BrokerUnavailable("Kafka is not reachable") for _ in messages]
    out: list[Position | None] = []
    for result in results:
        kept = isinstance(result, Position)
        QUARANTINED.labels("kept" if kept else "not_kept").inc()
        out.append(result if isinstance(result, Position) else None)
    return out


async def _produce(services: Services, rides: list[Ride]) -> list[Position | BaseException]:
    version = new_version()
    messages = [(e.key(), e.encode()) for e in (RideEnvelope(ride, version) for ride in rides)]
    return await services.producer.send_many(services.settings.rides_topic, messages)


async def _idempotent(request: web.Request, client: str, body: bytes, run: Any) -> web.Response:
    """Run ``run()`` once per Idempotency-Key; retries get the stored answer."""
    services = request.app[SERVICES]
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if not key:
        response: web.Response = await run()
        return response
    if len(key) > 200:
        raise MalformedBody("Idempotency-Key is longer than 200 characters")
    stored = await services.idempotency.begin(client, key, body)
    if stored is not None:
        IDEMPOTENT_REPLAYS.inc()
        return web.Response(
            body=stored.body,
            status=stored.status,
            content_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        response = await run()
    except BaseException:
        await services.idempotency.finish(client, key, body, None)
        raise
    assert isinstance(response.body, bytes)
    await services.idempotency.finish(client, key, body, StoredResponse(response.status, response.body))
    return response


def _rate_headers(services: Services, key: ApiKey, remaining: float) -> dict[str, str]:
    return {
        "RateLimit-Limit": f"{key.burst or services.settings.rate_limit_burst:g}",
        "RateLimit-Remaining": str(int(remaining)),
    }


async def post_ride(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    key = services.keys.authenticate(request.headers.get("Authorization"), ("ingest",))
    media_type(request, (JSON,))
    raw = await read_body(request, services.settings.max_body_bytes, services.settings.read_timeout_s)
    check_signature(request, key, raw)

    async def run() -> web.Response:
        remaining = await services.limiter.take(key.key_id, 1, key.rate_per_s, key.burst)
        data = parse_json(raw)
        try:
            ride = _validate(data, services, key)
        except RideValidationError as error:
            (where,) = await _quarantine(services, key, [(raw, error, data)])
            if where is not None:
                request_id = refused_request_id(where.partition, where.offset)
                error.details.update(request_id=request_id, status_url=status_url(services, request_id))
            raise
        (result,) = await _produce(services, [ride])
        if isinstance(result, BaseException):
            raise BrokerUnavailable(
                f"Kafka did not acknowledge the ride: {type(result).__name__}",
                retry_after_s=2,
                booking_id=ride.booking_id,
            )
        RIDES_ACCEPTED.inc()
        request_id = ride_request_id(result.partition, result.offset)
        # DEBUG: one line per ride costs ~10% of the API's CPU at 2,000 rides/s; the request id
        # already names the ride's Kafka position, so the log adds nothing needed for tracking.
        log.debug(
            "ride accepted",
            extra={
                "request.id": request_id,
                "booking_id": ride.booking_id,
                "kafka.partition": result.partition,
                "kafka.offset": result.offset,
                "client.key_id": key.key_id,
            },
        )
        body: dict[str, Any] = {
            "booking_id": ride.booking_id,
            "status": "Success",
            "request_id": request_id,
            "status_url": status_url(services, request_id),
        }
        if ride.extras:
            body["warnings"] = _warnings(ride)
        return json_response(body, 202, _rate_headers(services, key, remaining))

    return await _idempotent(request, key.key_id, raw, run)


def _decode_batch(raw: bytes, ctype: str) -> list[Any]:
    if ctype in NDJSON:
        return split_ndjson(raw)
    data = parse_json(raw)
    if not isinstance(data, list):
        raise MalformedBody("a batch must be a JSON array of rides (or NDJSON, one ride per line)")
    return data


def _item_error(index: int, error: XRidesError, data: object = None) -> dict[str, Any]:
    REJECTS.labels(error.code).inc()
    item: dict[str, Any] = {
        "index": index,
        "status": "Failed",
        "booking_id": _booking_id_of(data),
        "error_message": error.message,
        "error_code": error.code,
    }
    if isinstance(error, RideValidationError):
        item["errors"] = [e.as_dict() for e in error.errors]
    if error.retriable:
        item["retriable"] = True
    return item


@dataclass
class _Batch:
    """One batch's items as they are decided: valid rides to write, refused ones to quarantine."""

    size: int
    items: list[dict[str, Any]]
    valid: list[tuple[int, Ride]] = field(default_factory=list)
    refused: list[tuple[int, RideValidationError, object]] = field(default_factory=list)
    written: list[tuple[int, Position]] = field(default_factory=list)
    quarantined: list[tuple[int, Position]] = field(default_factory=list)

    @classmethod
    def validate(cls, values: list[Any], services: Services, key: ApiKey) -> _Batch:
        batch = cls(len(values), [{} for _ in values])
        for index, value in enumerate(values):
            if isinstance(value, XRidesError):  # an NDJSON line that is not JSON: nothing to keep
                batch.items[index] = _item_error(index, value)
                continue
            try:
                batch.valid.append((index, _validate(value, services, key)))
            except RideValidationError as error:
                batch.refused.append((index, error, value))
                batch.items[index] = _item_error(index, error, value)
        return batch

    def record_writes(self, results: list[Position | BaseException]) -> None:
        for (index, ride), result in zip(self.valid, results, strict=True):
            if isinstance(result, BaseException):
                unavailable = BrokerUnavailable(
                    f"Kafka did not acknowledge the ride: {type(result).__name__}"
                )
                self.items[index] = _item_error(index, unavailable, {"booking_id": ride.booking_id})
                continue
            self.written.append((index, result))
            item: dict[str, Any] = {
                "index": index,
                "status": "Success",
                "booking_id": ride.booking_id,
                "request_id": ride_request_id(result.partition, result.offset),
            }
            if ride.extras:
                item["warnings"] = _warnings(ride)
            self.items[index] = item

    def record_quarantine(self, services: Services, positions: list[Position | None]) -> None:
        for (index, _, _), where in zip(self.refused, positions, strict=True):
            self.items[index]["quarantined"] = where is not None
            if where is not None:
                self.quarantined.append((index, where))
                request_id = refused_request_id(where.partition, where.offset)
                self.items[index]["request_id"] = request_id
                self.items[index]["status_url"] = status_url(services, request_id)

    def manifest(self) -> bytes:
        """The batch's tracking record: every accepted and every quarantined item's position."""
        return orjson.dumps(
            {
                "items": [[i, p.partition, p.offset] for i, p in self.written],
                "refused": [[i, p.partition, p.offset] for i, p in self.quarantined],
            }
        )


async def post_batch(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    key = services.keys.authenticate(request.headers.get("Authorization"), ("ingest",))
    ctype = media_type(request, (JSON, *NDJSON))
    raw = await read_body(request, settings.max_body_bytes, settings.read_timeout_s)
    check_signature(request, key, raw)

    async def run() -> web.Response:
        values = _decode_batch(raw, ctype)
        if not values:
            raise MalformedBody("the batch is empty")
        if len(values) > settings.max_batch_items:
            raise PayloadTooLarge(f"{len(values)} rides exceed the batch limit of {settings.max_batch_items}")
        remaining = await services.limiter.take(key.key_id, len(values), key.rate_per_s, key.burst)
        batch = _Batch.validate(values, services, key)
        refused = [(orjson.dumps(value), error, value) for _, error, value in batch.refused]
        results, kept = await asyncio.gather(
            _produce(services, [ride for _, ride in batch.valid]) if batch.valid else _nothing(),
            _quarantine(services, key, refused),
        )
        batch.record_writes(results)
        batch.record_quarantine(services, kept)
        if batch.valid and not batch.written:
            raise BrokerUnavailable("Kafka did not acknowledge any ride of the batch", retry_after_s=2)
        RIDES_ACCEPTED.inc(len(batch.written))
        body = await _batch_body(services, batch)
        log.info(
            "batch accepted",
            extra={
                "request.id": body["request_id"],
                "batch.accepted": body["accepted"],
                "batch.rejected": body["rejected"],
                "client.key_id": key.key_id,
            },
        )
        code = 202 if len(batch.written) == batch.size else (207 if batch.written else 422)
        return json_response(body, code, _rate_headers(services, key, remaining))

    return await _idempotent(request, key.key_id, raw, run)


async def _nothing() -> list[Position | BaseException]:
    return []


async def _batch_body(services: Services, batch: _Batch) -> dict[str, Any]:
    """The answer: the batch's own request id (its manifest's position) and every item's fate."""
    body: dict[str, Any] = {"request_id": None, "status_url": None}
    if batch.written or batch.quarantined:
        (where,) = await services.producer.send_many(
            services.settings.requests_topic, [(None, batch.manifest())]
        )
        if isinstance(where, Position):
            batch_id = batch_request_id(where.partition, where.offset)
            body = {"request_id": batch_id, "status_url": status_url(services, batch_id)}
        else:  # the rides are durable; only the batch-level id is missing, items stay trackable
            body["warning"] = "batch id unavailable; track items by their own request_id"
    body["accepted"] = len(batch.written)
    body["rejected"] = batch.size - len(batch.written)
    body["items"] = batch.items
    return body
