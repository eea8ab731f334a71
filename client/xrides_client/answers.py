"""Reading the API's answers to POSTs: what to do with the request, and with each ride in it.

The shapes are the ones of ``ingest_service/rides.py`` and ``ingest_service/app.py::error_body``:

- batch: 202 (all accepted) / 207 (some) / 422 (none), each with ``items[i]`` per ride in request
  order: ``{"status": "Success", "request_id"}`` or ``{"status": "Failed", "error_message",
  "error_code", "errors"?, "retriable"?}``; a ``retriable`` item was valid but Kafka did not
  acknowledge it, so it is sent again (in a new request, with a new key);
- single: 202 ``{"booking_id", "status", "request_id", "status_url"}``, 422 the error shape;
- every error: ``{"status": "Failed", "error_message", "error_code", ...}``.

The request as a whole is retried on no answer, 408, 429 and 5xx (``Retry-After`` honoured); 401/403
(and 404/405: the URL serves no ride API) stop the client; 409 (the key was used with another body,
which this client never does) and other 4xx fail its rides; 413 splits a batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from xrides_client.transport import Response

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403, 404, 405})

Action = Literal["settle", "retry", "fatal", "fail", "split"]


@dataclass(frozen=True, slots=True)
class ItemResult:
    kind: Literal["accepted", "refused", "retry"]
    request_id: str | None = None
    reason: str | None = None
    error_code: str | None = None
    errors: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    items: tuple[ItemResult, ...] = ()
    batch_request_id: str | None = None
    reason: str = ""
    http_status: int | None = None
    retry_after_s: float | None = None
    forget_key: bool = False  # the Idempotency-Key cannot be used again (409)
    replayed: bool = False  # the API replayed an answer it had stored for this key


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _errors(value: object) -> tuple[Mapping[str, Any], ...]:
    if isinstance(value, list):
        return tuple(e for e in value if isinstance(e, dict))
    return ()


def _error_reason(response: Response, body: object) -> str:
    message = body.get("error_message") if isinstance(body, dict) else None
    if isinstance(message, str):
        return f"HTTP {response.status}: {message}"
    snippet = response.body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {response.status}" + (f": {snippet}" if snippet else "")


def _refusal(body: Mapping[str, Any], status: int) -> ItemResult:
    return ItemResult(
        "refused",
        request_id=_text(body.get("request_id")),
        reason=_text(body.get("error_message")) or f"refused (HTTP {status})",
        error_code=_text(body.get("error_code")),
        errors=_errors(body.get("errors")),
    )


def _item(value: object) -> ItemResult | None:
    if not isinstance(value, dict):
        return None
    if value.get("status") == "Success":
        return ItemResult("accepted", request_id=_text(value.get("request_id")))
    if value.get("status") == "Failed":
        if value.get("retriable") is True:
            return ItemResult("retry", reason=_text(value.get("error_message")))
        return _refusal(value, 422)
    return None


def _common(response: Response, body: object, size: int) -> Verdict | None:
    """The answers that mean the same for a single ride and a batch."""
    status = response.status
    reason = _error_reason(response, body)
    if status in RETRY_STATUSES:
        return Verdict("retry", reason=reason, http_status=status, retry_after_s=response.retry_after_s)
    if status in FATAL_STATUSES:
        return Verdict("fatal", reason=reason, http_status=status)
    if status == 409:
        return Verdict("fail", reason=reason, http_status=status, forget_key=True)
    if status == 413 and size > 1:
        return Verdict("split", reason=reason, http_status=status)
    return None


def read_batch_answer(response: Response, size: int) -> Verdict:
    body = response.json()
    common = _common(response, body, size)
    if common is not None:
        return common
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    status = response.status
    if status in (202, 207, 422) and isinstance(body, dict) and isinstance(body.get("items"), list):
        items = [_item(v) for v in body["items"]]
        if len(items) == size and all(i is not None for i in items):
            return Verdict(
                "settle",
                items=tuple(i for i in items if i is not None),
                batch_request_id=_text(body.get("request_id")),
                http_status=status,
                replayed=replayed,
            )
        return Verdict("fail", reason=f"HTTP {status}: answer without one item per ride", http_status=status)
    if status == 413:  # one ride larger than the API's body limit: nothing to split, the ride is refused
        return Verdict("settle", items=(_refusal(body if isinstance(body, dict) else {}, status),))
    return Verdict("fail", reason=_error_reason(response, body), http_status=status)


def read_single_answer(response: Response) -> Verdict:
    body = response.json()
    common = _common(response, body, 1)
    if common is not None:
        return common
    replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    status = response.status
    if status in (200, 201, 202) and isinstance(body, dict) and body.get("status") == "Success":
        item = ItemResult("accepted", request_id=_text(body.get("request_id")))
        return Verdict("settle", items=(item,), http_status=status, replayed=replayed)
    if status in (400, 413, 422) and isinstance(body, dict):
        # The platform's verdict on this ride's body: final. A request id, if the API adds one, is kept.
        return Verdict("settle", items=(_refusal(body, status),), http_status=status, replayed=replayed)
    return Verdict("fail", reason=_error_reason(response, body), http_status=status)
