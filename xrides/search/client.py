"""The Elasticsearch client every process builds: ``XRIDES_ES_URL`` may list several nodes.

``http://a:9200,http://b:9200`` gives the client every node of a cluster; it spreads requests over
them and retries a request on another node when one does not answer, so losing a node costs no
write (the indexer's bulk requests are idempotent: external versions).
"""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch


def es_hosts(url: str) -> list[str]:
    """The node URLs of a comma-separated ``XRIDES_ES_URL``."""
    hosts = [part.strip().rstrip("/") for part in url.split(",") if part.strip()]
    if not hosts:
        raise ValueError("XRIDES_ES_URL names no Elasticsearch node")
    return hosts


def connect(url: str, **options: Any) -> AsyncElasticsearch:
    """A client over every listed node, retrying on another node when one is down."""
    options.setdefault("retry_on_timeout", True)
    options.setdefault("max_retries", 3)
    return AsyncElasticsearch(es_hosts(url), **options)
