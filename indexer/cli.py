"""``python -m indexer``: the Elasticsearch indexer (``--check``: ask the running one's health)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from dataclasses import replace

from indexer.settings import IndexerSettings
from indexer.sink import Action, ElasticsearchSink
from xrides.health import check_health, start_status_server
from xrides.kafka import BatchConsumer, DeliveryProducer, KafkaConfig, ensure_topics
from xrides.logs import setup_logging
from xrides.search.client import connect
from xrides.settings import describe, load_settings
from xrides.topics import REFUSED, RIDES_ES, RIDES_ES_DLQ
from xrides.worker import LoopSettings, Worker, WorkerMetrics

log = logging.getLogger("indexer")

METRICS = WorkerMetrics("indexer")


def build_worker(settings: IndexerSettings, sink: ElasticsearchSink) -> Worker[Action]:
    s = settings
    kafka = KafkaConfig(s.kafka_bootstrap, "xrides-es-indexer")
    loop_settings = LoopSettings(
        max_records=s.indexer_batch_max, max_wait_ms=s.indexer_wait_ms, dlq_topic=s.es_dlq_topic
    )
    return Worker(
        lambda start_offsets: BatchConsumer(
            kafka, s.indexer_group_id, [s.actions_topic, s.refused_topic], start_offsets
        ),
        sink,
        loop_settings,
        METRICS,
        DeliveryProducer(kafka),
    )


async def run(settings: IndexerSettings) -> int:
    kafka = KafkaConfig(settings.kafka_bootstrap, "xrides-es-indexer")
    topics = [
        replace(RIDES_ES, name=settings.actions_topic),
        replace(RIDES_ES_DLQ, name=settings.es_dlq_topic),
        replace(REFUSED, name=settings.refused_topic),
    ]
    await asyncio.to_thread(ensure_topics, kafka, topics)
    sink = ElasticsearchSink(settings, connect(settings.es_url, request_timeout=30))
    await sink.put_templates()
    worker = build_worker(settings, sink)
    runner = await start_status_server(settings.metrics_host, settings.indexer_metrics_port, worker.health)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    log.info("indexing", extra={"kafka.topic": settings.actions_topic})
    try:
        await worker.run()
    finally:
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexer", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 0 if the running indexer is healthy")
    args = parser.parse_args(argv)
    settings = load_settings(IndexerSettings)
    if args.check:
        return check_health(settings.metrics_host, settings.indexer_metrics_port)
    setup_logging("xrides-es-indexer", settings.log_level)
    log.info("starting", extra={"settings": describe(settings)})
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(settings))
    return 0
