"""POST handlers: one ride, a batch, and the prototype's ``/xride_data``.

A ride is answered 202 only after Kafka acknowledged its message (acks=all). Validation happens
before anything is written, so a rejected ride leaves no trace downstream.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web

from ingest_service.auth import ApiKey
from ingest_service.body import JSON, NDJSON, media_type, parse_json, read_body, split_ndjson
from ingest_service.context import SERVICES, Services, check_signature, json_response
from ingest_service.idempotency import StoredResponse
from ingest_service.metrics import IDEMPOTENT_REPLAYS, REJECTS, RIDES_ACCEPTED
from xrides.errors import BrokerUnavailable, MalformedBody, PayloadTooLarge, XRidesError
from xrides.request_ids import Position, batch_request_id, ride_request_id
from xrides.ride import Ride, RideEnvelope, RideValidationError, new_version, parse_ride

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


def _validate(data: object, services: Services) -> Ride:
    try:
        return parse_ride(data, services.zone)
    except RideValidationError as error:
        booking_id = _booking_id_of(data)
        if booking_id is not None:
            error.details["booking_id"] = booking_id
        raise


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
    earlier = services.idempotency.begin(client, key, body)
    if earlier is not None:
        stored = await earlier
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
        services.idempotency.finish(client, key, None)
        raise
    assert isinstance(response.body, bytes)
    services.idempotency.finish(client, key, StoredResponse(response.status, response.body))
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
        remaining = services.limiter.take(key.key_id, 1, key.rate_per_s, key.burst)
        ride = _validate(parse_json(raw), services)
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
        body = {
            "booking_id": ride.booking_id,
            "status": "Success",
            "request_id": request_id,
            "status_url": status_url(services, request_id),
        }
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
        remaining = services.limiter.take(key.key_id, len(values), key.rate_per_s, key.burst)
        items: list[dict[str, Any]] = [{} for _ in values]
        valid: list[tuple[int, Ride]] = []
        for index, value in enumerate(values):
            if isinstance(value, XRidesError):
                items[index] = _item_error(index, value)
                continue
            try:
                valid.append((index, parse_ride(value, services.zone)))
            except RideValidationError as error:
                items[index] = _item_error(index, error, value)
        results = await _produce(services, [ride for _, ride in valid]) if valid else []
        written: list[tuple[int, Position]] = []
        for (index, ride), result in zip(valid, results, strict=True):
            if isinstance(result, BaseException):
                unavailable = BrokerUnavailable(
                    f"Kafka did not acknowledge the ride: {type(result).__name__}"
                )
                items[index] = _item_error(index, unavailable, {"booking_id": ride.booking_id})
            else:
                written.append((index, result))
                items[index] = {
                    "index": index,
                    "status": "Success",
                    "booking_id": ride.booking_id,
                    "request_id": ride_request_id(result.partition, result.offset),
                }
        if valid and not written:
            raise BrokerUnavailable("Kafka did not acknowledge any ride of the batch", retry_after_s=2)
        RIDES_ACCEPTED.inc(len(written))
        body: dict[str, Any] = {"request_id": None, "status_url": None}
        if written:
            manifest = orjson.dumps({"items": [[i, p.partition, p.offset] for i, p in written]})
            (where,) = await services.producer.send_many(settings.requests_topic, [(None, manifest)])
            if isinstance(where, Position):
                batch_id = batch_request_id(where.partition, where.offset)
                body = {"request_id": batch_id, "status_url": status_url(services, batch_id)}
            else:  # the rides are durable; only the batch-level id is missing, items stay trackable
                body["warning"] = "batch id unavailable; track items by their own request_id"
        body["accepted"] = len(written)
        body["rejected"] = len(values) - len(written)
        log.info(
            "batch accepted",
            extra={
                "request.id": body["request_id"],
                "batch.accepted": len(written),
                "batch.rejected": body["rejected"],
                "client.key_id": key.key_id,
            },
        )
        body["items"] = items
        code = 202 if len(written) == len(values) else (207 if written else 422)
        return json_response(body, code, _rate_headers(services, key, remaining))

    return await _idempotent(request, key.key_id, raw, run)
