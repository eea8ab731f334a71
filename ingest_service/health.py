"""``GET /v1/health``: the state of every dependency in one answer, no API key needed.

Critical (``503`` when one is down): Kafka, without which no ride is accepted, and PostgreSQL, the
system of record that tracking reads. Elasticsearch, the S3 archive and the platform's other
processes (their ``/healthz``, listed in ``XRIDES_HEALTH_PEERS``) only make the answer
``degraded``. The answer names dependencies and states, never an
address, a credential or an error message (an exception's class name at most). Checks run
concurrently, each within ``health_timeout_s``, and an answer is reused for a second so the
unauthenticated endpoint cannot be turned against the stores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import boto3
from aiohttp import web
from botocore.config import Config

from ingest_service.context import SERVICES, Services, json_response
from ingest_service.settings import ApiSettings
from xrides.search.client import es_hosts

_REUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class State:
    status: str  # up | down (dependencies); up | down | unreachable (processes)
    critical: bool = False
    latency_ms: float | None = None
    detail: str | None = None  # e.g. Elasticsearch's cluster colour, or an exception class

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "critical": self.critical}
        if self.latency_ms is not None:
            body["latency_ms"] = round(self.latency_ms, 1)
        if self.detail:
            body["detail"] = self.detail
        return body


def peers(settings: ApiSettings) -> dict[str, str]:
    """Process name -> health URL, from ``name=url,name=url`` (the launcher writes the local stack's
    into ``.stack/env``; a deployment lists its own). Empty: only the stores are checked."""
    pairs = (item.split("=", 1) for item in settings.health_peers.split(",") if "=" in item)
    return {name.strip(): url.strip() for name, url in pairs}


class Health:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.peers = peers(services.settings)
        self._session: aiohttp.ClientSession | None = None
        self._s3: Any = None
        self._lock = asyncio.Lock()
        self._last: tuple[float, dict[str, Any], int] | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.health_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def answer(self) -> tuple[dict[str, Any], int]:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < _REUSE_S:
                return self._last[1], self._last[2]
            body, status = await self._check()
            self._last = (time.monotonic(), body, status)
            return body, status

    async def _check(self) -> tuple[dict[str, Any], int]:
        deps = {
            "kafka": self._timed(self._kafka(), critical=True),
            "postgres": self._timed(self._postgres(), critical=True),
            "elasticsearch": self._timed(self._elasticsearch()),
            "s3": self._timed(self._s3_bucket()),
        }
        procs = {name: self._process(url) for name, url in self.peers.items()}
        found = await asyncio.gather(*deps.values(), *procs.values())
        dependencies = dict(zip(deps, found[: len(deps)], strict=True))
        processes = dict(zip(procs, found[len(deps) :], strict=True))
        if any(s.critical and s.status != "up" for s in dependencies.values()):
            overall, code = "down", 503
        elif all(s.status == "up" for s in (*dependencies.values(), *processes.values())):
            overall, code = "ok", 200
        else:
            overall, code = "degraded", 200
        body = {
            "status": overall,
            "checked_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "dependencies": {name: s.as_dict() for name, s in dependencies.items()},
            "processes": {name: s.as_dict() for name, s in processes.items()},
        }
        return body, code

    async def _timed(self, check: Awaitable[str | None], critical: bool = False) -> State:
        started = time.perf_counter()
        try:
            detail = await asyncio.wait_for(check, self.settings.health_timeout_s)
        except Exception as exc:  # any failure is the dependency's state, reported by class only
            return State("down", critical, detail=type(exc).__name__)
        return State("up", critical, (time.perf_counter() - started) * 1000, detail)

    async def _kafka(self) -> str | None:
        if not self.services.producer.ready(self.settings.rides_topic):
            raise ConnectionError("no broker connection or no metadata for the rides topic")
        return None

    async def _postgres(self) -> str | None:
        await self.services.tracking.ping()
        return None

    async def _elasticsearch(self) -> str | None:
        """The cluster's colour, from the first listed node that answers (a node down is not the
        cluster down)."""
        failures = []
        for host in es_hosts(self.settings.es_url):
            try:
                async with self.session.get(f"{host}/_cluster/health") as response:
                    if response.status != 200:
                        raise ConnectionError(f"HTTP {response.status}")
                    colour = str((await response.json()).get("status", ""))
            except (OSError, aiohttp.ClientError) as exc:
                failures.append(f"{host}: {exc}")
                continue
            if colour == "red":
                raise ConnectionError("cluster red")
            return colour
        raise ConnectionError("; ".join(failures))

    async def _s3_bucket(self) -> str | None:
        await asyncio.to_thread(self._head_bucket)
        return None

    def _head_bucket(self) -> None:
        """In a thread: boto3 blocks, building its client too (a tenth of a second)."""
        s = self.settings
        if self._s3 is None:
            self._s3 = boto3.client(
                "s3",
                endpoint_url=s.s3_endpoint,
                aws_access_key_id=s.s3_access_key,
                aws_secret_access_key=s.s3_secret_key,
                region_name="us-east-1",
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 1},
                    connect_timeout=s.health_timeout_s,
                    read_timeout=s.health_timeout_s,
                ),
            )
        self._s3.head_bucket(Bucket=s.s3_bucket)

    async def _process(self, url: str) -> State:
        started = time.perf_counter()
        try:
            async with self.session.get(url) as response:
                status = "up" if response.status == 200 else "down"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return State("unreachable", detail=type(exc).__name__)
        return State(status, latency_ms=(time.perf_counter() - started) * 1000)


HEALTH = web.AppKey("health", Health)


async def get_health(request: web.Request) -> web.Response:
    body, status = await request.app[HEALTH].answer()
    return json_response(body, status, {"Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    """Register ``GET /v1/health``; its HTTP session closes with the app."""
    health = Health(app[SERVICES])
    app[HEALTH] = health

    async def close(_: web.Application) -> None:
        await health.close()

    app.on_cleanup.append(close)
    app.router.add_get("/v1/health", get_health)
