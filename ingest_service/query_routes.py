"""``POST /v1/query`` and ``POST /v1/query/explain``, kept where clients know them and forwarded to the
query service (``query_service/``, ``XRIDES_QUERY_URL``), which runs the query DSL in its own process.

The API checks the key's ``query`` scope and its signature first, so a refusal costs no hop; the
request then goes on as it came (path and query string, body, ``Authorization`` and the signing
headers: the query service checks them again with the same keys, and its own replay memory sees the
signature once). The answer comes back as the query service gave it, status, body and
``Retry-After`` included. Errors are raised, never answered here: the ``observe`` middleware maps
them to responses in one place; a query service that cannot be reached is a 503.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from ingest_service.context import SERVICES, check_signature
from ingest_service.settings import ApiSettings
from xrides.errors import Unavailable, UnsupportedMediaType
from xrides.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER

MEDIA_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml")
FORWARDED = ("Authorization", "Content-Type", TIMESTAMP_HEADER, SIGNATURE_HEADER)
RETURNED = ("Retry-After",)


class QueryServiceUnavailable(Unavailable):
    code = "query_service_unavailable"


class QueryProxy:
    """One HTTP session to the query service for the API's life."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        url = f"{self.base_url}{request.raw_path}"
        try:
            async with self.session().post(url, data=body, headers=headers) as upstream:
                payload = await upstream.read()
                returned = {name: upstream.headers[name] for name in RETURNED if name in upstream.headers}
                return web.Response(
                    body=payload,
                    status=upstream.status,
                    content_type=upstream.content_type or "application/json",
                    headers=returned,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise QueryServiceUnavailable(
                f"the query service did not answer ({type(exc).__name__}): retry shortly", retry_after_s=2
            ) from exc


QUERY_PROXY = web.AppKey("query_proxy", QueryProxy)


async def _forward(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    key = services.keys.authenticate(request.headers.get("Authorization"), ("query",))
    if request.content_type not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"send the query as application/json (or YAML), not {request.content_type}"
        )
    body = await request.read()
    check_signature(request, key, body)
    return await request.app[QUERY_PROXY].forward(request, body)


def setup(app: web.Application, settings: ApiSettings) -> None:
    """Register the routes and the proxy (its session opens on first use, closes with the app)."""
    proxy = QueryProxy(settings.query_url, settings.query_proxy_timeout_s)
    app[QUERY_PROXY] = proxy

    async def close(_: web.Application) -> None:
        await proxy.close()

    app.on_cleanup.append(close)
    app.router.add_post("/v1/query", _forward)
    app.router.add_post("/v1/query/explain", _forward)
