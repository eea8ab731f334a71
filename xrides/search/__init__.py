"""Elasticsearch's side of the contract: the index templates every writer and reader agrees on."""

from xrides.search.templates import (
    ENRICHED_PROPERTIES,
    FAILED_RIDE_PROPERTIES,
    LIFECYCLE_DAYS,
    LOG_PROPERTIES,
    METADATA_PROPERTIES,
    IndexSettings,
    demand_template,
    failed_rides_template,
    index_settings,
    lifecycle_policy,
    logs_template,
    ride_properties,
    rides_template,
    template_name,
)

__all__ = [
    "ENRICHED_PROPERTIES",
    "FAILED_RIDE_PROPERTIES",
    "LIFECYCLE_DAYS",
    "LOG_PROPERTIES",
    "METADATA_PROPERTIES",
    "IndexSettings",
    "demand_template",
    "failed_rides_template",
    "index_settings",
    "lifecycle_policy",
    "logs_template",
    "ride_properties",
    "rides_template",
    "template_name",
]
