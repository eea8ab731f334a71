"""The indexer: applies the job's actions (``rides.es``) to Elasticsearch in bulk.

Writes are idempotent: the document id is the booking id and every write carries the ride's
version with ``version_type=external_gte``, so a replayed or older action is refused by
Elasticsearch (409) and counted as already applied. Offsets are committed only after a bulk
request succeeded for every item, so a crash replays, never skips. Items Elasticsearch refuses for
their content (mapping errors) go to ``rides.es-dlq`` with the reason; overload (429) and server
errors are retried with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

import orjson
from elasticsearch import Elasticsearch
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import Counter, Histogram

from flink_jobs.health import serve_health
from flink_jobs.mapping import demand_template, logs_template, rides_template, template_name
from flink_jobs.settings import StreamSettings
from flink_jobs.topics import ensure_topics
from xrides.delivery import Record, deliver_all
from xrides.errors import DeliveryAbandoned

log = logging.getLogger("flink_jobs.indexer")

ACTIONS = Counter("xrides_indexer_actions_total", "Actions applied, by outcome", ["outcome"])
BULK_SECONDS = Histogram(
    "xrides_indexer_bulk_duration_seconds",
    "Elasticsearch bulk latency",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BULK_FAILURES = Counter("xrides_indexer_bulk_failures_total", "Bulk requests that failed and were retried")

_RETRY_STATUSES = {429, 500, 502, 503, 504}


def bulk_body(actions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The bulk operations for index/delete actions, and which action each item belongs to."""
    operations: list[dict[str, Any]] = []
    owners: list[int] = []
    for position, action in enumerate(actions):
        meta = {
            "_index": action["index"],
            "_id": action["id"],
            "version": action["version"],
            "version_type": "external_gte",
        }
        if action["op"] == "index":
            operations += [{"index": meta}, action["doc"]]
            owners.append(position)
        elif action["op"] == "delete":
            operations.append({"delete": meta})
            owners.append(position)
    return operations, owners


def classify(item: dict[str, Any]) -> str:
    """ok | stale (a newer version is there) | retry | refused."""
    result = next(iter(item.values()))
    status = int(result.get("status", 500))
    if status < 300 or (status == 404 and "delete" in item):
        return "ok"
    if status == 409:
        return "stale"
    if status in _RETRY_STATUSES:
        return "retry"
    return "refused"


class Indexer:
    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.last_beat = time.monotonic()
        self.es = Elasticsearch(settings.es_url, request_timeout=30)
        self.consumer = KafkaConsumer(
            settings.actions_topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.indexer_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.indexer_batch_max,
        )
        self.dlq = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
        self._dead: list[Record] = []  # this batch's dead letters

    def ensure_templates(self) -> None:
        ensure_topics(self.settings)
        settings = self.settings
        for prefix, template in (
            (settings.es_rides_prefix, rides_template),
            (settings.es_demand_prefix, demand_template),
            (settings.es_logs_prefix, logs_template),
        ):
            self.es.indices.put_index_template(name=template_name(prefix), **template(prefix))

    def apply(self, actions: list[dict[str, Any]]) -> None:
        """Apply one batch; returns once every action is applied, stale, skipped or dead-lettered."""
        pending = actions
        delay = 0.2
        while pending:
            for action in pending:
                if action["op"] in ("skip", "dead"):
                    ACTIONS.labels(action["op"]).inc()
                    if action["op"] == "dead":
                        self._dead_letter(action["reason"], action["raw"].encode("latin-1"))
            writes = [a for a in pending if a["op"] in ("index", "delete")]
            if not writes:
                return
            operations, owners = bulk_body(writes)
            started = time.perf_counter()
            try:
                response = self.es.bulk(operations=operations, refresh=False)
            except Exception as exc:  # connection trouble: retry the whole batch
                BULK_FAILURES.inc()
                log.warning("bulk failed; retrying", extra={"error.message": str(exc)[:300]})
                self._sleep(delay)
                delay = min(delay * 2, 10)
                pending = writes
                continue
            BULK_SECONDS.observe(time.perf_counter() - started)
            retry: list[dict[str, Any]] = []
            for item, owner in zip(response["items"], owners, strict=True):
                outcome = classify(item)
                action = writes[owner]
                if outcome == "retry":
                    retry.append(action)
                    continue
                ACTIONS.labels(outcome).inc()
                if outcome == "refused":
                    reason = orjson.dumps(next(iter(item.values())).get("error", {})).decode()[:1000]
                    self._dead_letter(reason, orjson.dumps(action))
            pending = retry
            if retry:
                BULK_FAILURES.inc()
                self._sleep(delay)
                delay = min(delay * 2, 10)

    def _dead_letter(self, reason: str, payload: bytes) -> None:
        """Kept until the batch is settled; delivered before its offsets are committed."""
        self._dead.append(Record(self.settings.es_dlq_topic, payload, headers=[("reason", reason.encode())]))
        log.warning("dead-lettered for Elasticsearch", extra={"error.message": reason[:300]})

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    def run(self) -> None:
        self.ensure_templates()
        log.info("indexing", extra={"kafka.topic": self.settings.actions_topic})
        try:
            while not self.stopping.is_set():
                try:
                    polled = self.consumer.poll(timeout_ms=self.settings.indexer_wait_ms)
                except KafkaError as exc:  # a broker outage can escape poll; the consumer stays usable
                    log.warning("Kafka unavailable; polling again", extra={"error.message": str(exc)[:200]})
                    self.last_beat = time.monotonic()
                    self._sleep(1.0)
                    continue
                self.last_beat = time.monotonic()
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    continue
                self.apply([orjson.loads(r.value) for r in records])
                deliver_all(self.dlq, self._dead, self.stopping.wait)
                self._dead.clear()
                self._commit()  # only after every action of the batch is settled
        except DeliveryAbandoned as exc:  # stopped with Kafka away: the batch replays after a restart
            log.warning("stopped before the batch was settled", extra={"error.message": str(exc)})
        finally:
            self.consumer.close(autocommit=False)
            self.dlq.close(5)
            self.es.close()

    def _commit(self) -> None:
        """Commit the batch's offsets; a broker that is down only delays it.

        The batch is already in Elasticsearch (idempotent, versioned writes), so a commit that fails
        while Kafka is away is retried with the next batch; if the partition moves meanwhile, its
        new owner replays what was not committed and rewrites the same versions. Before, the failed
        commit ended the process (the fault suite's kill-kafka scenario found it).
        """
        try:
            self.consumer.commit()
        except KafkaError as exc:
            log.warning(
                "offset commit failed; retried with the next batch", extra={"error.message": str(exc)[:200]}
            )

    def serve_health(self) -> ThreadingHTTPServer:
        settings = self.settings
        return serve_health(
            settings.metrics_host,
            settings.indexer_metrics_port,
            lambda: time.monotonic() - self.last_beat < 60,
        )
