"""An in-process stand-in for the ingest API, with the faults the client must survive.

It follows ``ingest_service/rides.py`` and ``status.py``: the same answers and shapes (202/207/422
batches with per-item results, single rides, the one error shape), request ids that are positions in
a "rides" log, batch manifests, per-key Idempotency-Key replay (409 for another body; 503/429 not
stored), and ``GET /v1/requests/{id}``. ``accepted`` holds every ride "written to Kafka", so a
duplicate shows up there.

Faults are scripted per POST (``script``): ``"503"``/``"429"``/``"500"``/``"401"``/``"409"``/``"413"``
answer that status; ``"drop"`` processes the request, stores its answer, then closes the connection
without answering (a lost answer); ``"reset"`` closes it without processing; ``"hang"`` holds the
request until the fake stops.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INT_FIELDS = ("booking_id", "user_id", "vehicle_model_id", "travel_type_id", "driver_id")


@dataclass
class Post:
    path: str
    key: str | None
    body: bytes
    headers: dict[str, str]
    peer_port: int = 0  # the client's side of the connection: the same port means a kept-alive one
    status: int | None = None  # None: no answer was sent
    replayed: bool = False


@dataclass
class FakeApi:
    api_key: str = "test-key"
    retry_after: str = "0"
    script: deque[str] = field(default_factory=deque)
    kafka_fails_once: set[object] = field(default_factory=set)  # booking ids: first try is "retriable"
    final_states: dict[object, tuple[str, str | None]] = field(
        default_factory=dict
    )  # booking -> (state, reason)
    polls_before_final: int = 0
    forget_batches: bool = False  # GET of a batch id answers 404
    refusal_request_ids: bool = False  # 422 answers carry a request id (a planned API change)
    accepted: list[dict[str, Any]] = field(default_factory=list)  # the "rides" topic
    manifests: list[list[tuple[int, int]]] = field(default_factory=list)  # the "requests" topic
    posts: list[Post] = field(default_factory=list)
    gets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self._idempotency: dict[str, tuple[bytes, int, bytes]] = {}
        self._polls: Counter[int] = Counter()
        handler = type("Handler", (_Handler,), {"api": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeApi:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

    def accepted_bookings(self) -> Counter[object]:
        with self.lock:
            return Counter(r.get("booking_id") for r in self.accepted)

    def keys_of(self, path: str = "/v1/rides/batch") -> list[str | None]:
        with self.lock:
            return [p.key for p in self.posts if p.path == path]

    # -- the API's logic ---------------------------------------------------------------------------

    def validate(self, ride: object) -> list[dict[str, str]]:
        if not isinstance(ride, dict):
            return [_field_error("ride", "type_mismatch", "a JSON object")]
        errors = []
        for name in INT_FIELDS:
            value = ride.get(name)
            if name not in ride:
                errors.append(_field_error(name, "missing", f"{name} is missing"))
            elif not isinstance(value, int) or isinstance(value, bool):
                errors.append(
                    _field_error(
                        name,
                        "type_mismatch",
                        f"{name} data type mismatch, {name} expected to be <class 'int'>",
                    )
                )
        return errors

    def write(self, ride: dict[str, Any]) -> int | None:
        """Kafka: the ride's offset, or None when this booking is scripted to fail once."""
        booking = ride.get("booking_id")
        if booking in self.kafka_fails_once:
            self.kafka_fails_once.discard(booking)
            return None
        self.accepted.append(ride)
        return len(self.accepted) - 1

    def batch(self, rides: list[Any]) -> tuple[int, dict[str, Any]]:
        items: list[dict[str, Any]] = []
        written: list[tuple[int, int]] = []
        valid = 0
        for index, ride in enumerate(rides):
            booking = ride.get("booking_id") if isinstance(ride, dict) else None
            errors = self.validate(ride)
            if errors:
                item = _error_body(errors) | {"index": index, "booking_id": booking}
                if self.refusal_request_ids:
                    item["request_id"] = f"x0-{index}"
                items.append(item)
                continue
            valid += 1
            offset = self.write(ride)
            if offset is None:
                items.append(
                    {
                        "index": index,
                        "status": "Failed",
                        "booking_id": booking,
                        "error_message": "Kafka did not acknowledge the ride: KafkaTimeoutError",
                        "error_code": "broker_unavailable",
                        "retriable": True,
                    }
                )
            else:
                written.append((index, offset))
                items.append(
                    {"index": index, "status": "Success", "booking_id": booking, "request_id": f"r0-{offset}"}
                )
        if valid and not written:
            return 503, {
                "status": "Failed",
                "error_message": "Kafka did not acknowledge any ride of the batch",
                "error_code": "broker_unavailable",
                "retriable": True,
            }
        body: dict[str, Any] = {"request_id": None, "status_url": None}
        if written:
            self.manifests.append(written)
            batch_id = f"b0-{len(self.manifests) - 1}"
            body = {"request_id": batch_id, "status_url": f"/v1/requests/{batch_id}"}
        body |= {"accepted": len(written), "rejected": len(rides) - len(written), "items": items}
        return (202 if len(written) == len(rides) else 207 if written else 422), body

    def single(self, ride: Any) -> tuple[int, dict[str, Any]]:
        errors = self.validate(ride)
        if errors:
            body = _error_body(errors) | {
                "booking_id": ride.get("booking_id") if isinstance(ride, dict) else None
            }
            if self.refusal_request_ids:
                body["request_id"] = "x0-0"
            return 422, body
        offset = self.write(ride)
        if offset is None:
            return 503, {"status": "Failed", "error_message": "Kafka did not acknowledge", "error_code": "x"}
        request_id = f"r0-{offset}"
        return 202, {
            "booking_id": ride["booking_id"],
            "status": "Success",
            "request_id": request_id,
            "status_url": f"/v1/requests/{request_id}",
        }

    def item_state(self, index: int, offset: int) -> dict[str, Any]:
        ride = self.accepted[offset]
        self._polls[offset] += 1
        state, reason = "accepted", None
        if self._polls[offset] > self.polls_before_final:
            state, reason = self.final_states.get(ride.get("booking_id"), ("stored", None))
        return {
            "index": index,
            "request_id": f"r0-{offset}",
            "booking_id": ride.get("booking_id"),
            "state": state,
            "stored_at": datetime.now(UTC).isoformat() if state in ("stored", "superseded") else None,
            "reason": reason,
        }

    def request_status(self, request_id: str) -> tuple[int, dict[str, Any]]:
        kind, _, offset_text = request_id.partition("0-")
        if not offset_text.isdigit():
            return 404, _error("unknown request id", "not_found")
        offset = int(offset_text)
        if kind == "b" and not self.forget_batches and offset < len(self.manifests):
            items = [self.item_state(i, o) for i, o in self.manifests[offset]]
        elif kind == "r" and offset < len(self.accepted):
            items = [self.item_state(0, offset)]
        else:
            return 404, _error(f"unknown request id {request_id!r}", "not_found")
        return 200, {"request_id": request_id, "state": "mixed", "items": items}


def _field_error(name: str, code: str, message: str) -> dict[str, str]:
    return {"field": name, "code": code, "expected": "<class 'int'>", "received": "?", "message": message}


def _error(message: str, code: str) -> dict[str, Any]:
    return {"status": "Failed", "error_message": message, "error_code": code}


def _error_body(errors: list[dict[str, str]]) -> dict[str, Any]:
    body = _error("; ".join(e["message"] for e in errors), "validation_failed")
    body["errors"] = errors
    return body


SCRIPTED = {
    "500": (500, _error("internal error", "internal_error")),
    "503": (503, _error("Kafka did not acknowledge the ride", "broker_unavailable") | {"retriable": True}),
    "429": (429, _error("rate limit exceeded", "rate_limited") | {"retriable": True}),
    "401": (401, _error("unknown API key", "unauthorized")),
    "409": (409, _error("this Idempotency-Key was used with a different body", "idempotency_conflict")),
    "413": (413, _error("body exceeds the limit", "payload_too_large")),
}


class _Handler(BaseHTTPRequestHandler):
    api: FakeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(
        self, status: int, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.api.api_key}":
            return True
        self._answer(401, _error("unknown API key", "unauthorized"))
        return False

    def do_GET(self) -> None:
        if not self._authorised():
            return
        prefix = "/v1/requests/"
        if not self.path.startswith(prefix):
            self._answer(404, _error("no such route", "http_error"))
            return
        request_id = self.path[len(prefix) :]
        with self.api.lock:
            self.api.gets.append(request_id)
            status, body = self.api.request_status(request_id)
        self._answer(status, body)

    def do_POST(self) -> None:
        api = self.api
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.headers.get("Idempotency-Key")
        post = Post(self.path, key, raw, dict(self.headers.items()), self.client_address[1])
        with api.lock:
            api.posts.append(post)
            fault = api.script.popleft() if api.script else None
        if fault == "reset":
            self.close_connection = True
            return
        if fault == "hang":
            api.stop_event.wait(30)
            self.close_connection = True
            return
        if fault in SCRIPTED:
            status, body = SCRIPTED[fault]
            post.status = status
            headers = {"Retry-After": api.retry_after} if status in (429, 503) else {}
            self._answer(status, body, headers)
            return
        if not self._authorised():
            post.status = 401
            return
        if self.headers.get("Content-Type") != "application/json":
            post.status = 415
            self._answer(415, _error("Content-Type must be application/json", "unsupported_media_type"))
            return
        digest = hashlib.sha256(raw).digest()
        with api.lock:
            earlier = api._idempotency.get(key) if key else None
            if earlier is not None and earlier[0] != digest:
                status, data, replayed = 409, json.dumps(SCRIPTED["409"][1]).encode(), False
            elif earlier is not None:
                status, data, replayed = earlier[1], earlier[2], True
            else:
                rides = json.loads(raw)
                if self.path == "/v1/rides/batch":
                    status, body = api.batch(rides)
                else:
                    status, body = api.single(rides)
                data, replayed = json.dumps(body).encode(), False
                if key and status not in (429, 503):
                    api._idempotency[key] = (digest, status, data)
        if fault == "drop":  # processed and remembered, but the answer is lost
            self.close_connection = True
            return
        post.status, post.replayed = status, replayed
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        if status == 503:
            headers["Retry-After"] = api.retry_after
        self._answer(status, data, headers)
