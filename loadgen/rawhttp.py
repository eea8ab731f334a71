"""A lean HTTP/1.1 client for the load generator: keep-alive connections, one request at a time each.

The generator shares the machine with what it measures, so its own CPU is taken from the API: the
aiohttp client cost about 150 us per request (a third of a core at 2,000 requests/s); writing
prepared bytes and reading a ``Content-Length`` answer on a plain asyncio protocol costs a fraction
of that. It only speaks what the generator needs: ``POST`` over ``http://``, answers with a
``Content-Length`` (the API's), keep-alive unless the server says ``Connection: close``. Anything
else fails the request with an error, never with a made-up answer.

Errors surface as exceptions whose class name the generator records as the request's status:
``TimeoutError`` past the deadline (the fault suite counts these as hung requests),
``ConnectionRefusedError`` / ``ConnectionResetError`` / ``ProtocolError`` otherwise.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import urlsplit


class ProtocolError(OSError):
    """An answer this client does not understand (it is counted as a failed request)."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self._buffer = bytearray()
        self._status = 0
        self._body_length: int | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, waiter: asyncio.Future[tuple[int, bytes]]) -> None:
        assert self.transport is not None
        self._waiter = waiter
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._parse()
        except (ValueError, ProtocolError) as exc:
            waiter.set_exception(ProtocolError(str(exc)))
            self._close()
            return
        if answer is not None:
            self._waiter = None
            waiter.set_result(answer)

    def _parse(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        if self._body_length is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
            self._status = int(parts[1])
            length = None
            self.keep_alive = True
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    self.keep_alive = False
                elif name == "transfer-encoding":
                    raise ProtocolError("chunked answers are not supported by this client")
            if length is None:
                raise ProtocolError("an answer without Content-Length")
            del buffer[: end + 4]
            self._body_length = length
        if len(buffer) < self._body_length:
            return None
        body = bytes(buffer[: self._body_length])
        del buffer[: self._body_length]
        self._body_length = None
        return self._status, body

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc or ConnectionResetError("the server closed the connection"))

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """At most ``limit`` keep-alive connections to one ``http://host:port``; ``post`` waits for a free one."""

    def __init__(self, url: str, headers: dict[str, str], limit: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"HttpPool speaks http:// only, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        path = parts.path or "/"
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[_Connection] = deque()

    async def post(self, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        """Send ``body``; the answer's status and body. Raises OSError subclasses or TimeoutError."""
        loop = asyncio.get_running_loop()
        request = self._head + str(len(body)).encode() + b"\r\n\r\n" + body
        async with asyncio.timeout(timeout_s), self._slots:
            connection = None
            while self._idle and connection is None:
                candidate = self._idle.pop()
                connection = None if candidate.closed else candidate
            if connection is None:
                transport, connection = await loop.create_connection(_Connection, self.host, self.port)
                connection.transport = transport  # under load uvloop ran connection_made after this
            waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            connection.send(request, waiter)
            try:
                answer = await waiter
            except BaseException:
                connection._close()  # a late answer must not be read as the next request's
                raise
            if connection.keep_alive and not connection.closed:
                self._idle.append(connection)
            else:
                connection._close()
            return answer

    def close(self) -> None:
        while self._idle:
            self._idle.pop()._close()
