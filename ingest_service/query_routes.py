"""``POST /v1/query`` and ``POST /v1/query/explain``: the query DSL over HTTP (API keys with the query scope).

The body is the DSL's JSON form (YAML is accepted with a YAML content type); ``?backend=`` is
postgres, elasticsearch, archive or auto (the default). Errors are raised, never answered here:
the ``observe`` middleware maps them to responses in one place.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from aiohttp import web

from ingest_service.context import SERVICES, check_signature, json_response
from ingest_service.settings import ApiSettings
from query_dsl import QueryEngine, QuerySettings, parse_document, plan_query
from query_dsl.plan import Plan
from xrides.errors import MalformedBody, UnsupportedMediaType

QUERY_ENGINE = web.AppKey("query_engine", QueryEngine)
_MEDIA_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml")


def query_settings(settings: ApiSettings) -> QuerySettings:
    """The query DSL's settings from the API's: the fields both declare, by name (same XRIDES_* variables)."""
    shared = {f.name for f in dataclasses.fields(ApiSettings)} & {
        f.name for f in dataclasses.fields(QuerySettings)
    }
    return QuerySettings(**{name: getattr(settings, name) for name in shared})


async def _plan(request: web.Request) -> tuple[Plan, str, datetime]:
    services = request.app[SERVICES]
    key = services.keys.authenticate(request.headers.get("Authorization"), ("query",))
    if request.content_type not in _MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"send the query as application/json (or YAML), not {request.content_type}"
        )
    body = await request.read()
    check_signature(request, key, body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody("the query is not UTF-8") from exc
    query, params = parse_document(text)
    now = datetime.now(UTC)
    engine = request.app[QUERY_ENGINE]
    return plan_query(query, params, now, engine.limits), request.query.get("backend", "auto"), now


async def post_query(request: web.Request) -> web.Response:
    plan, backend, now = await _plan(request)
    result = await request.app[QUERY_ENGINE].run(plan, backend, now)
    return json_response(result.as_dict())


async def post_explain(request: web.Request) -> web.Response:
    plan, backend, now = await _plan(request)
    return json_response(request.app[QUERY_ENGINE].explain(plan, backend, now))


def setup(app: web.Application, settings: ApiSettings) -> None:
    """Register the routes and the engine (its clients open on first use, close with the app)."""
    services = app[SERVICES]
    engine = QueryEngine(query_settings(settings), pool=lambda: getattr(services.tracking, "pool", None))
    app[QUERY_ENGINE] = engine

    async def close(_: web.Application) -> None:
        await engine.close()

    app.on_cleanup.append(close)
    app.router.add_post("/v1/query", post_query)
    app.router.add_post("/v1/query/explain", post_explain)
