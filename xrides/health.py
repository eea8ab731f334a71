"""The ``--check`` flag every platform process has (ask the running process's ``/healthz``), and
the small status server the scheduled processes (archiver, reconcile) answer it with."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def check_health(host: str, port: int, tls: bool = False) -> int:
    """Exit status: 0 when ``http://host:port/healthz`` answers 200 within two seconds, else 1.

    ``tls``: ask over HTTPS without verifying the certificate: this probes our own process on
    its own address (often 127.0.0.1, which the certificate does not name), not a remote peer.
    """
    scheme, context = "http", None
    if tls:
        scheme, context = "https", ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        url = f"{scheme}://{host}:{port}/healthz"
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - http(s) only
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


async def start_status_server(
    host: str, port: int, status: Callable[[], tuple[dict[str, Any], bool]]
) -> web.AppRunner:
    """``/healthz`` (``status()``: body and healthy flag; 503 when unhealthy) and ``/metrics``."""

    async def healthz(_: web.Request) -> web.Response:
        body, ok = status()
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def serve_in_thread(host: str, port: int, status: Callable[[], tuple[dict[str, Any], bool]]) -> None:
    """The same server for a process whose main thread is not an event loop (the Flink job's
    ``execute()`` blocks it for the job's life): its own loop in a daemon thread."""
    started = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(start_status_server(host, port, status))
        except BaseException as exc:  # the port is taken: tell the caller, do not die silently
            failed.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    threading.Thread(target=serve, name="health", daemon=True).start()
    started.wait(10)
    if failed:
        raise failed[0]


class RunStatus:
    """What ``/healthz`` of a scheduled process says: stalled when no run has ended lately."""

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self.beat_at = time.monotonic()
        self.last: dict[str, Any] | None = None
        self.error: str | None = None

    def beat(self) -> None:
        self.beat_at = time.monotonic()

    def __call__(self) -> tuple[dict[str, Any], bool]:
        ok = time.monotonic() - self.beat_at < self.stale_after_s
        return {"status": "ok" if ok else "stalled", "last_run": self.last, "last_error": self.error}, ok
