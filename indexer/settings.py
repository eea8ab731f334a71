"""The indexer's settings: ``XRIDES_*`` variables, defaults that work with the local stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xrides.topics import REFUSED, RIDES_ES, RIDES_ES_DLQ


@dataclass(frozen=True, slots=True)
class IndexerSettings:
    SECRETS: ClassVar[tuple[str, ...]] = ()

    kafka_bootstrap: str = "127.0.0.1:19092"
    es_url: str = "http://127.0.0.1:19200"
    actions_topic: str = RIDES_ES.name  # the stream job's index/delete actions
    refused_topic: str = REFUSED.name  # the API's refusals, indexed into failed-rides-*
    es_dlq_topic: str = RIDES_ES_DLQ.name  # actions Elasticsearch refused, with the reason
    indexer_group_id: str = "xrides-es-indexer"
    # The templates the indexer puts before it writes (xrides/search/templates.py).
    es_rides_prefix: str = "rides-"
    es_demand_prefix: str = "ride-demand-"
    es_logs_prefix: str = "logs-"
    es_failed_prefix: str = "failed-rides-"  # refused rides, by the UTC day they were refused
    es_replicas: int = 0  # replicas of every daily index (1 on a cluster: a node lost loses no shard)
    es_lifecycle: bool = False  # ILM policies own retention (needs a distribution with ILM)
    indexer_batch_max: int = 2000
    indexer_wait_ms: int = 100
    indexer_metrics_port: int = 9103
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
