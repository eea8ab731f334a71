"""The logs pipeline: a platform process's JSON lines -> Kafka -> the Flink job -> the indexer -> logs-*.

Isolated like test_flink_job.py (its own logs topic, actions topic, index prefixes), with an API
process as the platform request's source. The handler's no-blocking promise is checked against a
real Kafka client pointed at an address where no broker listens.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_flink_job import Stream

from xrides.kafka import KafkaAdmin, KafkaConfig
from xrides.logs import JsonFormatter, KafkaLogHandler
from xrides.ride import example_ride
from xrides.topics import LOGS

from conftest import free_port

pytestmark = pytest.mark.integration


def test_an_unreachable_kafka_never_blocks_the_service() -> None:
    handler = KafkaLogHandler(f"127.0.0.1:{free_port()}", LOGS.name, capacity=100)  # nobody listens there
    handler.setFormatter(JsonFormatter("xrides-test", event_ids=True))
    began = time.perf_counter()
    for i in range(2000):
        handler.emit(logging.LogRecord("xrides.test", logging.INFO, __file__, 1, f"line {i}", None, None))
    emitting = time.perf_counter() - began
    assert emitting < 1.0, f"2,000 emits took {emitting:.2f} s with Kafka down"
    began = time.perf_counter()
    handler.close()
    assert time.perf_counter() - began < 8, "close() must give up on an unreachable broker"
    assert handler.sent == 0
    # Every line is counted as dropped, except at most the one a blocked send still holds.
    assert handler.dropped >= 1999


def post_batch(base: str, api_key: str, rides: list[dict[str, Any]]) -> dict[str, Any]:
    request = urllib.request.Request(
        base + "/v1/rides/batch",
        data=json.dumps(rides).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def test_a_platform_request_id_is_searchable_in_logs(
    stack_env: dict[str, str], tmp_path: Path, start_api: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    logs_topic = f"test-logs-{tag}"
    logs_prefix = f"test-{tag}-logs-"
    admin = KafkaAdmin(KafkaConfig(stack_env["XRIDES_KAFKA_BOOTSTRAP"], "logs-it"))
    topic = replace(LOGS, name=logs_topic, partitions=1, cluster_partitions=None)
    assert admin.ensure_topics([topic]) == [logs_topic]
    stream = Stream(stack_env, tmp_path)
    stream.env.update({"XRIDES_LOGS_TOPIC": logs_topic, "XRIDES_ES_LOGS_PREFIX": logs_prefix})
    try:
        base, api = start_api(
            log_kafka_bootstrap=stack_env["XRIDES_KAFKA_BOOTSTRAP"], log_kafka_topic=logs_topic
        )
        rides = [{**example_ride(), "booking_id": random.randint(10**9, 2 * 10**9)} for _ in range(2)]
        body = post_batch(base, stack_env["XRIDES_API_KEY"], rides)
        request_id = body["request_id"]
        stream.start("indexer")
        stream.start("job")
        deadline = time.monotonic() + 240
        hits: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not hits:
            stream.es.indices.refresh(index=f"{logs_prefix}*", allow_no_indices=True)
            hits = stream.es.search(
                index=f"{logs_prefix}*", query={"term": {"request.id": request_id}}, allow_no_indices=True
            )["hits"]["hits"]
            time.sleep(1)
        assert hits, f"no log line with request.id {request_id}\n{api.log_tail()}\n" + "\n".join(
            p.log_tail(20) for p in stream.processes
        )
        line = hits[0]["_source"]
        assert line["service.name"] == "xrides-api"
        assert line["message"] == "batch accepted"
        assert hits[0]["_id"] == line["event.id"]
        assert hits[0]["_index"].startswith(logs_prefix)
        mapping = next(iter(stream.es.indices.get_mapping(index=hits[0]["_index"]).values()))["mappings"]
        assert mapping["properties"]["request"]["properties"]["id"] == {"type": "keyword"}
    finally:
        names = list(stream.es.indices.get(index=f"{logs_prefix}*", allow_no_indices=True))
        if names:
            stream.es.indices.delete(index=",".join(names))
        stream.close()
