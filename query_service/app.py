"""The query service's aiohttp application: routes, the one error-to-HTTP mapping, the concurrency bound.

    POST /v1/query?backend=postgres|elasticsearch|archive|auto    run a query (JSON or YAML body)
    POST /v1/query/explain?backend=...                            what would run, nothing runs
    GET  /healthz                                                  liveness and how busy it is
    GET  /metrics                                                  Prometheus

Errors are raised, never answered in handlers: ``observe`` maps every :class:`XRidesError` to the
platform's one error shape (``status``, ``error_code``, ``error_message``) with its HTTP status, and
``Retry-After`` on 429 and 503. Any other exception is a bug: a 500, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from query_dsl import QueryEngine, parse_document, plan_query
from query_dsl.guards import Limits
from query_dsl.plan import Plan
from query_dsl.result import Result
from query_service import metrics
from query_service.settings import QueryServiceSettings
from xrides.auth import ApiKey, KeyRing, KeyRingHooks
from xrides.errors import MalformedBody, RateLimited, Unavailable, UnsupportedMediaType, XRidesError
from xrides.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureChecker

log = logging.getLogger("query_service")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MEDIA_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml")


class Engine(Protocol):
    """What the service needs of the query engine (:class:`query_dsl.QueryEngine`; tests script one)."""

    limits: Limits

    async def run(self, plan: Plan, backend: str = "auto", now: datetime | None = None) -> Result: ...
    def explain(self, plan: Plan, backend: str, now: datetime) -> dict[str, Any]: ...
    async def close(self) -> None: ...


class QueryBusy(RateLimited):
    """Every query slot is taken: come back shortly (429 + Retry-After)."""

    code = "query_busy"


class Slots:
    """At most ``limit`` queries at once; the next one is refused at once, not queued."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.busy = 0
        metrics.MAX_CONCURRENT.set(limit)

    @contextlib.contextmanager
    def take(self) -> Any:
        if self.busy >= self.limit:
            raise QueryBusy(
                f"{self.limit} queries are running, the most this service runs at once: retry in "
                f"{self.retry_after_s} s",
                retry_after_s=self.retry_after_s,
            )
        self.busy += 1
        metrics.IN_FLIGHT.set(self.busy)
        try:
            yield
        finally:
            self.busy -= 1
            metrics.IN_FLIGHT.set(self.busy)


@dataclass
class Service:
    settings: QueryServiceSettings
    engine: Engine
    keys: KeyRing
    signatures: SignatureChecker
    slots: Slots
    background: set[asyncio.Task[Any]] = field(default_factory=set)


SERVICE = web.AppKey("service", Service)


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(error: XRidesError) -> web.Response:
    """The platform's one error shape (the API's), with Retry-After when a retry can succeed."""
    headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, Unavailable) else None
    body: dict[str, Any] = {"status": "Failed", "error_message": error.message, "error_code": error.code}
    if error.retriable:
        body["retriable"] = True
    return json_response(body, error.http_status, headers)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map errors to responses (here and nowhere else), count and time every request."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource else "unmatched"
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except XRidesError as error:
        metrics.REFUSALS.labels(error.code).inc()
        response = error_response(error)
        log.info("query refused", extra={"http.route": route, "error.code": error.code,
                                         "error.message": error.message[:500]})  # fmt: skip
    except web.HTTPException as exc:  # aiohttp's own 404/405/413
        response = json_response(
            {"status": "Failed", "error_message": exc.reason, "error_code": "http_error"}, exc.status
        )
    except Exception:
        log.exception("unhandled error", extra={"http.route": route})
        response = json_response(
            {"status": "Failed", "error_message": "internal error", "error_code": "internal_error"}, 500
        )
    metrics.REQUESTS.labels(route, request.method, str(response.status)).inc()
    metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
    return response


async def _plan(request: web.Request) -> tuple[Plan, str, datetime]:
    service = request.app[SERVICE]
    key: ApiKey = service.keys.authenticate(request.headers.get("Authorization"), ("query",))
    if request.content_type not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"send the query as application/json (or YAML), not {request.content_type}"
        )
    body = await request.read()
    service.signatures.check(
        key,
        request.method,
        request.raw_path,
        body,
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
    )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody("the query is not UTF-8") from exc
    query, params = parse_document(text)
    now = datetime.now(UTC)
    return plan_query(query, params, now, service.engine.limits), request.query.get("backend", "auto"), now


def _outcome(error: BaseException) -> str:
    if isinstance(error, QueryBusy):
        return "busy"
    if isinstance(error, Unavailable):
        return "unavailable"
    if isinstance(error, XRidesError):
        return "timeout" if error.http_status == 504 else "refused"
    return "error"


async def post_query(request: web.Request) -> web.Response:
    plan, backend, now = await _plan(request)
    service = request.app[SERVICE]
    label = backend if backend in ("postgres", "elasticsearch", "archive", "auto") else "other"
    started = time.perf_counter()
    try:
        with service.slots.take():
            result: Result = await service.engine.run(plan, backend, now)
    except Exception as error:
        metrics.RUNS.labels(label, _outcome(error)).inc()
        raise
    metrics.RUNS.labels(result.backend, "ok").inc()
    metrics.RUN_SECONDS.labels(result.backend).observe(time.perf_counter() - started)
    metrics.ROWS.labels(result.backend).observe(len(result.rows))
    lag = (result.freshness or {}).get("lag_rides")
    if lag is not None:
        metrics.LAG.labels(result.backend).set(lag)
    return json_response(result.as_dict())


async def post_explain(request: web.Request) -> web.Response:
    plan, backend, now = await _plan(request)
    return json_response(request.app[SERVICE].engine.explain(plan, backend, now))


async def healthz(request: web.Request) -> web.Response:
    slots = request.app[SERVICE].slots
    return json_response({"status": "ok", "queries_running": slots.busy, "max_concurrent": slots.limit})


async def metrics_page(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _watch_keys(service: Service) -> None:
    """Rotation without a restart: pick up a changed keys file within ``api_keys_reload_s``."""
    if not service.settings.api_keys_file:
        return
    while True:
        await asyncio.sleep(service.settings.api_keys_reload_s)
        service.keys.reload()


def build_service(settings: QueryServiceSettings, engine: Engine | None = None) -> Service:
    hooks = KeyRingHooks(
        count=metrics.KEYS.set, reloaded=lambda outcome: metrics.KEY_RELOADS.labels(outcome).inc()
    )
    return Service(
        settings=settings,
        engine=engine or QueryEngine(settings),
        keys=KeyRing.from_settings(settings.api_key_hashes, settings.api_key, settings.api_keys_file, hooks),
        signatures=SignatureChecker(
            settings.signature_window_s,
            on_failure=lambda reason: metrics.SIGNATURE_FAILURES.labels(reason).inc(),
        ),
        slots=Slots(settings.query_max_concurrent, settings.query_retry_after_s),
    )


def create_app(settings: QueryServiceSettings, engine: Engine | None = None) -> web.Application:
    """The application; ``engine`` defaults to one over the configured stores (clients open on first use)."""
    app = web.Application(middlewares=[observe], client_max_size=settings.query_max_body_bytes)
    service = build_service(settings, engine)
    app[SERVICE] = service

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_watch_keys(service))
        service.background.add(task)
        if settings.api_keys_file:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, service.keys.reload, True)
        log.info("query service started", extra={"url.port": settings.query_port})
        yield
        if settings.api_keys_file:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for job in list(service.background):
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await service.engine.close()  # after in-flight queries finished (aiohttp's shutdown_timeout)
        log.info("query service stopped")

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/query", post_query)
    app.router.add_post("/v1/query/explain", post_explain)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app
