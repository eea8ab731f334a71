"""``xrides-query`` / ``python -m query_service``: run the query service, or ``--check`` its health."""

from __future__ import annotations

import argparse
import logging

import uvloop
from aiohttp import web

from query_dsl.compile_pg import service_zone
from query_service.app import create_app
from query_service.settings import QueryServiceSettings
from xrides.health import check_health
from xrides.logs import setup_logging
from xrides.settings import describe, load_settings

log = logging.getLogger("query_service")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xrides-query", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 0 if the running query service is healthy")
    args = parser.parse_args(argv)
    settings = load_settings(QueryServiceSettings)
    if args.check:
        return check_health(settings.query_host, settings.query_port)
    setup_logging("xrides-query", settings.log_level)
    service_zone(settings.local_zone)  # a wrong zone stops the start, not the first query
    log.info("starting", extra={"settings": describe(settings)})
    # SIGTERM/SIGINT: stop accepting, let running queries finish (up to the query timeout), then
    # the cleanup closes the engine's pools and clients.
    web.run_app(
        create_app(settings),
        host=settings.query_host,
        port=settings.query_port,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_s,
        print=None,
        loop=uvloop.new_event_loop(),
    )
    return 0
