"""``/healthz`` and ``/metrics`` on the persister's metrics port."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class Health:
    """Healthy while the consume loop keeps turning (it polls at least every second when idle)."""

    def __init__(self, stale_after_s: float = 60.0) -> None:
        self.last_beat = time.monotonic()
        self.stale_after_s = stale_after_s
        self.db_ok = False

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def healthy(self) -> bool:
        return time.monotonic() - self.last_beat < self.stale_after_s


async def start_health_server(health: Health, host: str, port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        ok = health.healthy()
        return web.json_response(
            {"status": "ok" if ok else "stalled", "postgres": health.db_ok}, status=200 if ok else 503
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
