"""Tracking: what became of a request, and the stored version of a ride.

States: ``accepted`` (in Kafka, not yet processed by the persister), ``stored`` (in PostgreSQL,
with when), ``superseded`` (processed, but a newer version of the booking was already stored),
``failed`` (dead-lettered, with the reason). Derived from Kafka positions and the persister's
receipts: no write happens on the ingest path to make this possible.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ingest_service.context import SERVICES, check_signature, json_response
from xrides.errors import MalformedBody, NotFound
from xrides.request_ids import Position, parse_request_id, ride_request_id


def _overall(states: list[str]) -> str:
    if "accepted" in states:
        return "accepted"
    failed = states.count("failed")
    if failed == 0:
        return "stored"
    return "failed" if failed == len(states) else "partially_failed"


async def get_request(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    key = services.keys.authenticate(request.headers.get("Authorization"), ("ingest", "query"))
    check_signature(request, key, b"")
    text = request.match_info["request_id"]
    request_id = parse_request_id(text)
    if request_id.kind == "r":
        if not await services.positions.ride_exists(request_id.position):
            raise NotFound(f"unknown request id {text!r}")
        items: list[tuple[int, Position]] = [(0, request_id.position)]
    else:
        found = await services.positions.batch_items(request_id.position)
        if found is None:
            raise NotFound(f"unknown request id {text!r}")
        items = found
    states = await services.tracking.item_states([p for _, p in items])
    out: list[dict[str, Any]] = []
    for index, position in items:
        state = states.get(position)
        out.append(
            {
                "index": index,
                "request_id": ride_request_id(position.partition, position.offset),
                "booking_id": state.booking_id if state else None,
                "state": "accepted" if state is None or state.state == "pending" else state.state,
                "stored_at": state.stored_at.isoformat() if state and state.stored_at else None,
                "reason": state.reason if state else None,
            }
        )
    body = {"request_id": str(request_id), "state": _overall([i["state"] for i in out]), "items": out}
    return json_response(body)


async def get_ride(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    key = services.keys.authenticate(request.headers.get("Authorization"), ("ingest", "query"))
    check_signature(request, key, b"")
    text = request.match_info["booking_id"]
    if not text.isdigit() or len(text) > 19:
        raise MalformedBody("booking_id must be a positive integer")
    ride = await services.tracking.latest_ride(int(text))
    if ride is None:
        raise NotFound(f"no stored ride with booking_id {text}")
    return json_response({**ride, "state": "stored"})
