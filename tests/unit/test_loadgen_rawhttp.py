"""The load generator's lean HTTP client against small local servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from loadgen.rawhttp import HttpPool, ProtocolError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/rides"


@pytest.mark.asyncio
async def test_answers_come_back_in_order_over_reused_connections() -> None:
    await _answers_in_order()


def test_the_same_on_uvloop() -> None:
    """The generator runs on uvloop: the same exchange on its loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_answers_in_order())


async def _answers_in_order() -> None:
    connections = 0

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                body = await _read_request(reader)
                answer = b'{"echo":' + body + b"}"
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n" % len(answer) + answer)
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    server, url = await _serve(echo)
    pool = HttpPool(url, {"Authorization": "Bearer k"}, limit=2)
    try:
        answers = await asyncio.gather(*(pool.post(str(i).encode(), 5) for i in range(20)))
    finally:
        pool.close()
        server.close()
    assert answers == [(202, b'{"echo":%d}' % i) for i in range(20)]
    assert connections <= 2


@pytest.mark.asyncio
async def test_connection_close_is_honoured_and_a_dropped_request_is_an_error() -> None:
    seen = 0

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        await _read_request(reader)
        seen += 1
        if seen == 2:  # the second request: drop the connection without answering
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server, url = await _serve(flaky)
    pool = HttpPool(url, {}, limit=1)
    try:
        assert await pool.post(b"{}", 5) == (200, b"ok")
        with pytest.raises(ConnectionResetError):
            await pool.post(b"{}", 5)
        assert await pool.post(b"{}", 5) == (200, b"ok")  # a fresh connection after the drop
    finally:
        pool.close()
        server.close()


@pytest.mark.asyncio
async def test_a_silent_server_is_a_timeout_and_chunked_answers_are_refused() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        await writer.drain()

    for handler, error in ((silent, TimeoutError), (chunked, ProtocolError)):
        server, url = await _serve(handler)
        pool = HttpPool(url, {}, limit=1)
        try:
            with pytest.raises(error):
                await pool.post(b"{}", 0.3)
        finally:
            pool.close()
            server.close()


def test_only_plain_http_is_spoken() -> None:
    with pytest.raises(ValueError, match="http://"):
        HttpPool("https://127.0.0.1:8443/v1/rides", {}, limit=1)
