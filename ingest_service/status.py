"""Tracking: what became of a request, and the stored version of a ride.

States: ``accepted`` (in Kafka, not yet processed by the persister), ``stored`` (in PostgreSQL,
with when), ``superseded`` (processed, but a newer version of the booking was already stored),
``failed`` (dead-lettered, with the reason), ``refused`` (the API refused it: kept in the
quarantine with every error, and ``replayed_as`` the ride's new request id once a quarantine replay
stored it). Derived from Kafka positions, the persister's receipts and the quarantine table: no
database write happens on the ingest path to make this possible.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ingest_service.context import SERVICES, Services, check_signature, json_response
from xrides.errors import MalformedBody, NotFound
from xrides.request_ids import Position, parse_request_id, refused_request_id, ride_request_id


def _overall(states: list[str]) -> str:
    """One word for a request: still ``accepted`` while any item is; else ``stored`` when every
    item is stored, ``refused`` or ``failed`` when every one is, ``partially_failed`` otherwise."""
    if "accepted" in states:
        return "accepted"
    kinds = {"stored" if s == "superseded" else s for s in states}
    if len(kinds) == 1:
        return kinds.pop()
    return "partially_failed"


async def get_request(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    key = services.keys.authenticate(request.headers.get("Authorization"), ("ingest", "query"))
    check_signature(request, key, b"")
    text = request.match_info["request_id"]
    request_id = parse_request_id(text)
    positions = services.positions
    accepted: list[tuple[int, Position]] = []
    refused: list[tuple[int, Position]] = []
    if request_id.kind == "r":
        if not await positions.ride_exists(request_id.position):
            raise NotFound(f"unknown request id {text!r}")
        accepted = [(0, request_id.position)]
    elif request_id.kind == "q":
        if not await positions.exists(positions.refused_topic, request_id.position):
            raise NotFound(f"unknown request id {text!r}")
        refused = [(0, request_id.position)]
    else:
        found = await positions.batch_items(request_id.position)
        if found is None:
            raise NotFound(f"unknown request id {text!r}")
        accepted, refused = found.accepted, found.refused
    out = [
        *await _accepted_items(services, accepted),
        *await _refused_items(services, refused, request_id.kind),
    ]
    out.sort(key=lambda item: item["index"])
    body = {"request_id": str(request_id), "state": _overall([i["state"] for i in out]), "items": out}
    return json_response(body)


async def _accepted_items(services: Services, items: list[tuple[int, Position]]) -> list[dict[str, Any]]:
    states = await services.tracking.item_states([p for _, p in items])
    out = []
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
    return out


async def _refused_items(
    services: Services, items: list[tuple[int, Position]], kind: str
) -> list[dict[str, Any]]:
    """Refused rides: final at once. Their errors and any replay come from the quarantine table;
    a single refusal the persister has not recorded yet is read from the quarantine topic."""
    if not items:
        return []
    states = await services.tracking.refusals([p for _, p in items])
    out = []
    for index, position in items:
        state = states.get(position)
        item: dict[str, Any] = {
            "index": index,
            "request_id": refused_request_id(position.partition, position.offset),
            "state": "refused",
            "booking_id": state.booking_id if state else None,
            "errors": state.errors if state else None,
            "replayed_as": state.replayed_as if state else None,
        }
        if state is None and kind == "q":
            refusal = await services.positions.refusal(position)
            if refusal is not None:
                item.update(booking_id=refusal.booking_id, errors=refusal.errors)
        out.append(item)
    return out


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
