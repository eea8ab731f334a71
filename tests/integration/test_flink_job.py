"""The PyFlink job and the indexer against real Kafka, Elasticsearch and Flink's mini cluster.

Isolated by their own topics, consumer groups and index prefix. One test walks the whole story,
because starting the job (a JVM plus Python workers) is the expensive part.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from xrides.kafka import DeliveryProducer, KafkaAdmin, KafkaConfig, OutRecord, TopicReader
from xrides.ride import RideEnvelope, example_ride, parse_ride
from xrides.ride.enrich import haversine_km
from xrides.topics import RIDES

from conftest import PlatformProcess, free_port, wait_http

pytestmark = pytest.mark.integration


class Stream:
    def __init__(self, stack_env: dict[str, str], tmp_path: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tmp_path = tmp_path
        self.rides_topic = f"test-rides-{tag}"
        self.prefix = f"test-{tag}-rides-"
        self.indexer_port = free_port()
        self.env = {
            **os.environ,
            **stack_env,
            "XRIDES_RIDES_TOPIC": self.rides_topic,
            "XRIDES_ACTIONS_TOPIC": f"test-actions-{tag}",
            "XRIDES_ES_DLQ_TOPIC": f"test-es-dlq-{tag}",
            "XRIDES_ES_RIDES_PREFIX": self.prefix,
            "XRIDES_FLINK_GROUP_ID": f"test-flink-{tag}",
            "XRIDES_INDEXER_GROUP_ID": f"test-indexer-{tag}",
            "XRIDES_INDEXER_METRICS_PORT": str(self.indexer_port),
            "XRIDES_REFERENCE_TIME": "2013-02-01T00:00:00+00:00",
            "XRIDES_FLINK_STATE_DIR": str(tmp_path / "flink"),
            "XRIDES_LOGS_TOPIC": "",  # the platform's job indexes the logs topic; tests opt in
            "XRIDES_FLINK_METRICS_PORT": "0",  # :9106 is the platform job's; tests opt in on a free port
        }
        self.kafka = KafkaConfig(stack_env["XRIDES_KAFKA_BOOTSTRAP"], "flink-it")
        created = KafkaAdmin(self.kafka).ensure_topics(
            [replace(RIDES, name=self.rides_topic, partitions=3, cluster_partitions=None)]
        )
        assert created == [self.rides_topic]
        self.producer = DeliveryProducer(self.kafka)  # acks=all; send_all returns once acknowledged
        self.es = Elasticsearch(stack_env["XRIDES_ES_URL"])
        self.processes: list[PlatformProcess] = []

    def start(self, command: str, **overrides: str) -> PlatformProcess:
        env = {**self.env, **{f"XRIDES_{k.upper()}": v for k, v in overrides.items()}}
        env["XRIDES_JOB_METRICS_PORT"] = str(free_port())  # several jobs may run at once
        log_path = self.tmp_path / f"{command}-{len(self.processes)}.log"
        if command == "indexer":  # its own package now: python -m indexer
            process = PlatformProcess("indexer", env, log_path)
        else:  # python -m flink_jobs job
            process = PlatformProcess("flink_jobs", env, log_path, args=(command,))
        process.start()
        self.processes.append(process)
        if command == "indexer":
            wait_http(f"http://127.0.0.1:{self.indexer_port}/healthz", 60, process.proc)
        return process

    def send(self, version: int, **changes: Any) -> None:
        envelope = RideEnvelope(parse_ride({**example_ride(), **changes}), version)
        self.send_raw(envelope.key(), envelope.encode())

    def send_raw(self, key: bytes, value: bytes) -> None:
        """One message on the test's rides topic; returns once Kafka acknowledged it."""
        self.producer.send_all([OutRecord(self.rides_topic, value, key=key)])

    def docs(self) -> dict[str, dict[str, Any]]:
        self.es.indices.refresh(index=f"{self.prefix}*", allow_no_indices=True)
        result = self.es.search(index=f"{self.prefix}*", size=1000, allow_no_indices=True)
        return {hit["_id"]: {**hit["_source"], "_index": hit["_index"]} for hit in result["hits"]["hits"]}

    def wait_for(self, predicate: Any, timeout_s: float = 180) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        docs: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            docs = self.docs()
            if predicate(docs):
                return docs
            time.sleep(1)
        logs = "\n".join(p.log_tail(15) for p in self.processes)
        raise AssertionError(f"condition not met; {len(docs)} docs\n{logs}")

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        self.producer.close()
        names = list(self.es.indices.get(index=f"{self.prefix}*", allow_no_indices=True))
        if names:  # wildcard deletes are refused (action.destructive_requires_name)
            self.es.indices.delete(index=",".join(names))
        self.es.close()

    def caught_up(self, group: str, topic: str, timeout_s: float = 180) -> None:
        """Wait until ``group`` has committed the end of ``topic`` (Flink commits on checkpoints)."""
        admin = KafkaAdmin(self.kafka)
        reader = TopicReader(self.kafka)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                ends = {p: marks.high for p, marks in reader.watermarks(topic).items()}
                committed = admin.group_offsets(group, topic, list(ends))
                # a partition that never had a message has nothing to commit (and nothing to read)
                if ends and all(committed.get(p, 0) >= end for p, end in ends.items()):
                    return
                time.sleep(1)
            raise AssertionError(f"{group} did not reach the end of {topic}")
        finally:
            reader.close()


@pytest.fixture
def stream(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Stream]:
    s = Stream(stack_env, tmp_path)
    yield s
    s.close()


def test_rides_flow_enriched_versioned_and_survive_a_killed_job(stream: Stream) -> None:
    for booking in range(1, 41):
        stream.send(100, booking_id=booking, from_date=f"1/{booking % 28 + 1}/2013 10:00")
    stream.send(100, booking_id=41, from_date="6/1/2012 10:00")  # older than 60 days before 2013-02-01
    stream.send(200, booking_id=1, from_date="1/2/2013 10:00", car_cancellation=1)  # an update
    stream.send(50, booking_id=2, from_date="1/3/2013 10:00", driver_id=999)  # an old replay
    stream.send(200, booking_id=3, from_date="1/25/2013 10:00")  # moves to another day
    stream.send_raw(b"x", b"\xff not json")

    stream.start("indexer")
    job = stream.start("job")
    docs = stream.wait_for(lambda d: len(d) >= 40 and d.get("1", {}).get("is_cancelled") is True)
    assert len(docs) == 40, "one document per in-window booking, none for the old one"
    assert "41" not in docs
    assert docs["1"]["is_cancelled"] is True
    assert docs["2"]["driver_id"] == 0, "the older version must not win"
    assert docs["3"]["_index"] == f"{stream.prefix}2013.01.25"
    assert docs["5"]["distance_km"] == round(haversine_km(12.92415, 77.67229, 12.92732, 77.63575), 3)
    assert docs["5"]["hour_of_day"] == 10
    assert docs["5"]["booking_channel"] == "offline"

    # SIGKILL the job after a checkpoint covered everything; what came after is replayed, and the
    # keyed state (where each booking is indexed) comes back from the retained checkpoint.
    stream.caught_up(stream.env["XRIDES_FLINK_GROUP_ID"], stream.rides_topic)
    assert job.proc is not None
    job.proc.send_signal(signal.SIGKILL)
    job.proc.wait()
    for booking in range(42, 62):
        stream.send(300, booking_id=booking, from_date="1/20/2013 08:00")
    # booking 10 was indexed on 2013.01.11 before the kill; moving it now needs the restored state
    stream.send(400, booking_id=10, from_date="1/26/2013 10:00")
    restarted = stream.start("job")
    docs = stream.wait_for(lambda d: len(d) >= 60 and d.get("10", {}).get("_index", "").endswith("01.26"))
    assert len(docs) == 60
    assert "restoring from checkpoint" in restarted.log_path.read_text(errors="replace")
    stream.caught_up(stream.env["XRIDES_FLINK_GROUP_ID"], stream.rides_topic)
    stream.caught_up(stream.env["XRIDES_INDEXER_GROUP_ID"], stream.env["XRIDES_ACTIONS_TOPIC"])
    moved = stream.es.search(index=f"{stream.prefix}*", query={"ids": {"values": ["10"]}})["hits"]["hits"]
    assert [hit["_index"] for hit in moved] == [f"{stream.prefix}2013.01.26"], "the pre-kill copy was left"

    # Replaying the whole topic (a new consumer group reads from the start) changes nothing.
    replay_group = f"{stream.env['XRIDES_FLINK_GROUP_ID']}-replay"
    replay = stream.start("job", flink_group_id=replay_group)
    stream.caught_up(replay_group, stream.rides_topic)
    stream.caught_up(stream.env["XRIDES_INDEXER_GROUP_ID"], stream.env["XRIDES_ACTIONS_TOPIC"])
    docs = stream.docs()
    assert len(docs) == 60
    assert docs["1"]["is_cancelled"] is True
    assert docs["2"]["driver_id"] == 0
    copies = stream.es.search(index=f"{stream.prefix}*", query={"ids": {"values": ["3"]}})["hits"]["hits"]
    assert [hit["_index"] for hit in copies] == [f"{stream.prefix}2013.01.25"], (
        "a moved ride left a stale copy"
    )
    assert replay.proc is not None
    assert replay.proc.poll() is None


def test_rides_es_is_keyed_so_moved_bookings_are_found_once_under_indexer_restarts(stream: Stream) -> None:
    """Every action for one booking goes to one partition of the actions topic, keyed by its id:
    a ride moved between days has its delete and its new index applied in order, whatever the
    indexer's restarts replay (unkeyed, a delete could overtake its index on another partition)."""
    days = ["1/10/2013 09:00", "1/11/2013 09:00", "1/12/2013 09:00", "1/10/2013 18:00"]
    bookings = range(1000, 1040)
    job = stream.start("job")
    indexer = stream.start("indexer")
    for step, day in enumerate(days, 1):
        for booking in bookings:
            stream.send(100 * step, booking_id=booking, from_date=day)
        version = 100 * step
        stream.wait_for(lambda d, v=version: any(doc.get("version") == v for doc in d.values()))
        indexer.stop(signal.SIGKILL)  # mid-stream: what it had not committed is applied again
        indexer = stream.start("indexer")
    stream.caught_up(stream.env["XRIDES_FLINK_GROUP_ID"], stream.rides_topic)
    stream.caught_up(stream.env["XRIDES_INDEXER_GROUP_ID"], stream.env["XRIDES_ACTIONS_TOPIC"])
    hits = stream.es.search(index=f"{stream.prefix}*", size=1000, query={"match_all": {}})["hits"]["hits"]
    found: dict[str, list[str]] = {}
    for hit in hits:
        found.setdefault(hit["_id"], []).append(hit["_index"])
    assert found == {str(b): [f"{stream.prefix}2013.01.10"] for b in bookings}, (
        "a booking is missing or twice"
    )
    assert all(hit["_source"]["version"] == 400 for hit in hits)

    reader = TopicReader(stream.kafka)
    try:
        topic = stream.env["XRIDES_ACTIONS_TOPIC"]
        ranges = {p: (m.low, m.high) for p, m in reader.watermarks(topic).items()}
        records = reader.read(topic, ranges, 100_000)
    finally:
        reader.close()
    partitions: dict[str, set[int]] = {}
    for record in records:
        action = json.loads(record.value)
        if action["op"] in ("index", "delete"):
            assert record.key == action["id"].encode(), "an action not keyed by its document id"
            partitions.setdefault(action["id"], set()).add(record.partition)
    assert {str(b) for b in bookings} <= set(partitions)
    assert all(len(parts) == 1 for parts in partitions.values()), "one booking's actions on two partitions"
    assert len({next(iter(p)) for p in partitions.values()}) > 1, "every booking on one partition: not keyed"
    assert job.proc is not None and job.proc.poll() is None
