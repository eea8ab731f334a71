"""``/openapi.json`` (generated from the ride model) and ``/docs`` (Swagger UI, served locally)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import orjson
import swagger_ui
from aiohttp import web

from ingest_service.openapi import build_openapi

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>XRides API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""


@cache
def _openapi_bytes() -> bytes:
    return orjson.dumps(build_openapi())


def swagger_static_dir() -> Path:
    return Path(swagger_ui.__file__).parent / "static"


async def openapi_json(_: web.Request) -> web.Response:
    return web.Response(body=_openapi_bytes(), content_type="application/json")


async def swagger_page(_: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")
