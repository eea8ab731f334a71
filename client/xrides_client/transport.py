"""The I/O edge: one keep-alive HTTP connection per client thread, behind a small protocol.

Everything above this module sees a :class:`Response` or a :class:`TransportError`; tests can swap
in any object with ``request``, ``abort`` and ``close``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from xrides_client.backoff import parse_retry_after

USER_AGENT = "xrides-client/0.1"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (a proxy's HTML error page, say)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def retry_after_s(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class TransportError(Exception):
    """No answer: the request may or may not have reached the API (refused, reset, timed out)."""


class Transport(Protocol):
    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> Response: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


class HttpTransport:
    """http.client with keep-alive; a stale kept-alive connection is replaced once, transparently.

    Repeating a request on a fresh connection is safe here because every POST carries an
    Idempotency-Key and GETs change nothing.
    """

    def __init__(self, url: str, timeout_s: float, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the API URL must be http(s)://host[:port][/prefix], got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout_s
        self._ssl = ssl_context
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # guards _conn against abort() from another thread
        self._reused = False

    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._conn is None:
                if self._https:
                    self._conn = http.client.HTTPSConnection(
                        self._host, self._port, timeout=self._timeout, context=self._ssl
                    )
                else:
                    self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
                self._reused = False
            return self._conn

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> Response:
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        for fresh_try in (False, True):
            conn = self._connection()
            reused = self._reused
            try:
                conn.request(method, self._prefix + path, body=body, headers=all_headers)
                answer = conn.getresponse()
                data = answer.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if reused and not fresh_try:
                    continue  # the server closed an idle kept-alive connection: try a new one
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
            if answer.will_close:
                self._drop()
            else:
                self._reused = True
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)
        raise AssertionError("unreachable")  # pragma: no cover

    def abort(self) -> None:
        """Interrupt a request in progress from another thread (used by ``close``)."""
        with self._lock:
            conn = self._conn
        sock = getattr(conn, "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # already closed: nothing to interrupt
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._drop()
