"""Reading request bodies within limits: size, time, content type, encoding."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import orjson
from aiohttp import web

from xrides.errors import MalformedBody, PayloadTooLarge, UnsupportedMediaType, XRidesError
from xrides.jsonkeys import pairs_hook

JSON = "application/json"
_NO_DUPLICATES = pairs_hook(MalformedBody)
NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonlines")


class RequestTimeout(XRidesError):
    http_status = 408
    code = "request_timeout"


def media_type(request: web.Request, allowed: tuple[str, ...]) -> str:
    """The request's media type if allowed (charset must be UTF-8 when given), else 415."""
    ctype = request.content_type
    charset = request.charset
    if ctype not in allowed or (charset and charset.lower() not in ("utf-8", "utf8")):
        raise UnsupportedMediaType(f"Content-Type must be one of {', '.join(allowed)} (UTF-8); got {ctype!r}")
    return ctype


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """Read at most ``max_bytes``; refuse early on Content-Length, and stop reading once over."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"body exceeds the limit of {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise RequestTimeout(f"the body was not received within {timeout_s:g} s") from exc
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise MalformedBody("the body is empty; send a JSON object")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"malformed JSON: {exc}") from exc
    refuse_duplicate_keys(raw, value)
    return value


def _key_count(value: Any) -> int:
    """Keys of the object, or of the array's objects (nested objects are not counted: with any, the
    exact check runs, which is slower but still right)."""
    if isinstance(value, dict):
        return len(value)
    if isinstance(value, list):
        return sum(len(v) for v in value if isinstance(v, dict))
    return 0


def refuse_duplicate_keys(raw: bytes, value: Any) -> None:
    """400 for an object with a key twice (``{"from_lat": 1, "from_lat": 2}``).

    JSON parsers disagree on which duplicate wins (orjson keeps the last, others the first), so a
    body whose meaning depends on the parser is refused rather than guessed at. The exact check
    (a second, slower parse) runs only when the body holds more ``":`` separators than the parsed
    value has keys, which a body with duplicates always does; a flat ride never pays it unless a
    string value itself contains ``":``.
    """
    if raw.count(b'":') <= _key_count(value):
        return
    with contextlib.suppress(json.JSONDecodeError):  # orjson already accepted it: only duplicates matter
        json.loads(raw, object_pairs_hook=_NO_DUPLICATES)


def split_ndjson(raw: bytes) -> list[Any | MalformedBody]:
    """One value per non-blank line; a bad line becomes that item's error, not the batch's."""
    items: list[Any | MalformedBody] = []
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
            refuse_duplicate_keys(line, value)
            items.append(value)
        except orjson.JSONDecodeError as exc:
            items.append(MalformedBody(f"line {line_no}: malformed JSON: {exc}"))
        except MalformedBody as exc:
            items.append(MalformedBody(f"line {line_no}: {exc}"))
    return items
