"""Elasticsearch's side of the contract: the index templates every writer and reader agrees on."""

from xrides.search.templates import (
    ENRICHED_PROPERTIES,
    LOG_PROPERTIES,
    METADATA_PROPERTIES,
    demand_template,
    logs_template,
    rides_template,
    template_name,
)

__all__ = [
    "ENRICHED_PROPERTIES",
    "LOG_PROPERTIES",
    "METADATA_PROPERTIES",
    "demand_template",
    "logs_template",
    "rides_template",
    "template_name",
]
