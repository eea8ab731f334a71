"""The indexer as a sink of the worker loop (xrides/worker.py): the stream job's actions, in bulk.

Writes are idempotent: the document id is the booking id and every write carries the ride's
version with ``version_type=external_gte``, so a replayed or older action is refused by
Elasticsearch (409) and counted as already applied. Refused rides (the API's ``rides.refused``,
xrides/quarantine.py) become documents of ``failed-rides-YYYY.MM.DD`` whose id is their request id,
so a replay rewrites the same document. The loop commits offsets only after
``write`` returned, so a crash replays, never skips. Items Elasticsearch refuses for their content
(mapping errors) are dead-lettered to ``rides.es-dlq`` with the reason, as are the job's own
``dead`` actions (rides it could not decode); overload (429) and server errors are retried here a
few times, then the whole batch is handed back to the loop as ``SinkUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch
from prometheus_client import Counter, Histogram

from indexer.settings import IndexerSettings
from xrides.errors import SinkUnavailable
from xrides.kafka import Record
from xrides.quarantine import decode_refusal
from xrides.request_ids import refused_request_id
from xrides.ride import format_timestamp
from xrides.search import (
    LIFECYCLE_DAYS,
    IndexSettings,
    demand_template,
    failed_rides_template,
    lifecycle_policy,
    logs_template,
    ride_properties,
    rides_template,
    template_name,
)
from xrides.worker import DeadLetter

log = logging.getLogger("indexer.sink")

ACTIONS = Counter("xrides_indexer_actions_total", "Actions applied, by outcome", ["outcome"])
BULK_SECONDS = Histogram(
    "xrides_indexer_bulk_duration_seconds",
    "Elasticsearch bulk latency",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BULK_FAILURES = Counter("xrides_indexer_bulk_failures_total", "Bulk requests that failed and were retried")

_RETRY_STATUSES = {429, 500, 502, 503, 504}
_ITEM_ATTEMPTS = 4  # bulk rounds for items Elasticsearch asked to retry, before the loop takes over


@dataclass(slots=True)
class Action:
    """One record of ``rides.es``: where it was, and what it asks (None: not an action at all)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    action: dict[str, Any] | None = field(default=None)


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


def refused_action(record: Record, prefix: str) -> dict[str, Any] | None:
    """The index action of a refused ride, or None when the message is not a refusal."""
    try:
        refusal = decode_refusal(record.value)
    except (ValueError, TypeError):
        return None
    request_id = refused_request_id(record.partition, record.offset)
    refused = refusal.refused_at_time
    doc = {
        "request_id": request_id,
        "refused_at": format_timestamp(refused),
        "booking_id": refusal.booking_id,
        "key_id": refusal.key_id,
        "contract_version": refusal.contract,
        "errors": refusal.errors,
        "error_fields": sorted({str(e.get("field")) for e in refusal.errors}),
        "error_codes": sorted({str(e.get("code")) for e in refusal.errors}),
        "body": refusal.body.decode("utf-8", "replace"),
    }
    index = f"{prefix}{refused.strftime('%Y.%m.%d')}"
    return {"op": "index", "index": index, "id": request_id, "version": refusal.refused_at, "doc": doc}


def _dead(item: Action, reason: str, label: str, value: bytes | None = None) -> DeadLetter:
    return DeadLetter(
        item.topic,
        item.partition,
        item.offset,
        item.key,
        item.value if value is None else value,
        reason,
        label,
    )


class ElasticsearchSink:
    def __init__(self, settings: IndexerSettings, es: AsyncElasticsearch) -> None:
        self.settings = settings
        self.es = es
        self.es_ok = False

    async def put_templates(self) -> None:
        """The templates, and the ride properties on indices created before the last contract
        change (new fields are additive: a mapping only grows)."""
        s = self.settings
        index = IndexSettings(s.es_replicas, s.es_lifecycle)
        if index.lifecycle:
            for family in LIFECYCLE_DAYS:
                name, body = lifecycle_policy(family)
                await self.es.ilm.put_lifecycle(name=name, **body)
        await self.es.indices.put_index_template(
            name=template_name(s.es_rides_prefix), **rides_template(s.es_rides_prefix, index=index)
        )
        for prefix, template in (
            (s.es_demand_prefix, demand_template),
            (s.es_logs_prefix, logs_template),
            (s.es_failed_prefix, failed_rides_template),
        ):
            await self.es.indices.put_index_template(name=template_name(prefix), **template(prefix, index))
        await self.es.indices.put_mapping(
            index=f"{s.es_rides_prefix}*", properties=ride_properties(), allow_no_indices=True
        )

    def decode(self, record: Record) -> Action:
        item = Action(record.topic, record.partition, record.offset, record.key, record.value)
        if record.topic == self.settings.refused_topic:
            item.action = refused_action(record, self.settings.es_failed_prefix)
            return item
        try:
            parsed = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            return item
        if isinstance(parsed, dict) and parsed.get("op") in ("index", "delete", "skip", "dead"):
            item.action = parsed
        return item

    async def write(self, batch: list[Action]) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        writes: list[Action] = []
        for item in batch:
            action = item.action
            if action is None:
                dead.append(_dead(item, "not an indexer action", "undecodable"))
            elif action["op"] == "skip":
                ACTIONS.labels("skip").inc()
            elif action["op"] == "dead":  # the job could not decode the ride: keep its bytes
                ACTIONS.labels("dead").inc()
                dead.append(_dead(item, action["reason"], "job", action["raw"].encode("latin-1")))
            else:
                writes.append(item)
        delay = 0.2
        for attempt in range(_ITEM_ATTEMPTS):
            if not writes:
                break
            writes = await self._bulk(writes, dead)
            if writes and attempt + 1 < _ITEM_ATTEMPTS:
                BULK_FAILURES.inc()
                await asyncio.sleep(delay)
                delay *= 2
        if writes:
            raise SinkUnavailable(f"Elasticsearch asked to retry {len(writes)} items {_ITEM_ATTEMPTS} times")
        return dead

    async def _bulk(self, writes: list[Action], dead: list[DeadLetter]) -> list[Action]:
        """One bulk request; the items to retry. Refusals are added to ``dead``."""
        operations, owners = bulk_body([w.action for w in writes])  # type: ignore[misc]
        started = time.perf_counter()
        try:
            response = await self.es.bulk(operations=operations, refresh=False)
        except Exception as exc:  # connection trouble: the loop retries the whole batch
            BULK_FAILURES.inc()
            self.es_ok = False
            raise SinkUnavailable(f"Elasticsearch bulk failed: {type(exc).__name__}: {exc}"[:300]) from exc
        self.es_ok = True
        BULK_SECONDS.observe(time.perf_counter() - started)
        retry: list[Action] = []
        for result, owner in zip(response["items"], owners, strict=True):
            outcome = classify(result)
            if outcome == "retry":
                retry.append(writes[owner])
                continue
            ACTIONS.labels(outcome).inc()
            if outcome == "refused":
                reason = orjson.dumps(next(iter(result.values())).get("error", {})).decode()[:1000]
                dead.append(_dead(writes[owner], reason, "refused"))
        return retry

    async def start_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        return {}  # the group's committed offsets: they follow applied batches

    def health(self) -> dict[str, Any]:
        return {"elasticsearch": self.es_ok}

    async def close(self) -> None:
        await self.es.close()
