"""The local stack, exercised with the client libraries the platform itself uses.

Each test talks to one real service started by ``python3 -m deploy.stack up``.
A service that is not there fails the test: these are never skipped.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config
from elasticsearch import Elasticsearch
from pyarrow import fs

from xrides.kafka import BatchConsumer, DeliveryProducer, KafkaAdmin, KafkaConfig, OutRecord, TopicReader
from xrides.topics import LOGS, RIDES, RIDES_DLQ

from stack_env import stack_setting

pytestmark = pytest.mark.integration


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_kafka_produce_and_consume_on_a_fresh_topic() -> None:
    config = KafkaConfig(stack_setting("XRIDES_KAFKA_BOOTSTRAP"), "stack-it")
    topic = _unique("stack-it")
    admin = KafkaAdmin(config, timeout_s=30.0)
    try:
        created = admin.ensure_topics([replace(RIDES, name=topic, partitions=1, cluster_partitions=None)])
        assert created == [topic]
        producer = DeliveryProducer(config)  # acks=all; returns once the broker acknowledged
        try:
            (position,) = producer.send_all([OutRecord(topic, b'{"ride_id": 1}', key=b"ride-1")])
        finally:
            producer.close(timeout_s=10)
        reader = TopicReader(config, timeout_s=20.0)
        try:
            beginning = reader.watermarks(topic)[position.partition].low
            received = reader.read_one(topic, position.partition, beginning)
        finally:
            reader.close()
        assert received is not None, f"nothing at the beginning of {topic}/{position.partition}"
        assert (received.topic, received.partition, received.offset) == (
            topic,
            position.partition,
            position.offset,
        )
        assert (received.key, received.value) == (b"ride-1", b'{"ride_id": 1}')
        _, topics = admin.describe()
        assert set(topics) >= {topic, RIDES.name, RIDES_DLQ.name, LOGS.name}
    finally:
        admin.delete_topics([topic])


def test_postgres_select_and_create_insert_select() -> None:
    dsn = stack_setting("XRIDES_PG_DSN")
    table = _unique("stack_it").replace("-", "_")

    async def scenario() -> tuple[int, list[Any]]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            one = await conn.fetchval("select 1")
            await conn.execute(f"create table {table} (id bigint primary key, city text not null)")
            try:
                await conn.executemany(f"insert into {table} values ($1, $2)", [(1, "Lisbon"), (2, "Porto")])
                rows = await conn.fetch(f"select id, city from {table} order by id")
            finally:
                await conn.execute(f"drop table {table}")
            return one, [tuple(row) for row in rows]
        finally:
            await conn.close()

    one, rows = asyncio.run(scenario())
    assert one == 1
    assert rows == [(1, "Lisbon"), (2, "Porto")]


def test_elasticsearch_index_and_search() -> None:
    es = Elasticsearch(stack_setting("XRIDES_ES_URL"), request_timeout=30)
    index = _unique("stack-it")
    try:
        health = es.cluster.health(wait_for_status="yellow", timeout="30s")
        assert health["status"] in {"green", "yellow"}
        es.indices.create(
            index=index, mappings={"properties": {"city": {"type": "keyword"}, "km": {"type": "float"}}}
        )
        es.index(index=index, id="r1", document={"city": "Lisbon", "km": 3.5}, refresh="wait_for")
        es.index(index=index, id="r2", document={"city": "Porto", "km": 7.0}, refresh="wait_for")
        found = es.search(index=index, query={"term": {"city": "Porto"}})
        assert [hit["_id"] for hit in found["hits"]["hits"]] == ["r2"]
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
        es.close()


def _s3_client() -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack_setting("XRIDES_S3_ENDPOINT"),
        aws_access_key_id=stack_setting("XRIDES_S3_ACCESS_KEY"),
        aws_secret_access_key=stack_setting("XRIDES_S3_SECRET_KEY"),
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def test_s3_put_and_get_with_boto3() -> None:
    s3 = _s3_client()
    bucket = stack_setting("XRIDES_S3_BUCKET")
    key = f"stack-it/{_unique('obj')}.json"
    body = json.dumps({"ride_id": 1}).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    try:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="stack-it/")
        assert key in [item["Key"] for item in listed.get("Contents", [])]
    finally:
        s3.delete_object(Bucket=bucket, Key=key)


def test_s3_parquet_roundtrip_with_pyarrow() -> None:
    endpoint = stack_setting("XRIDES_S3_ENDPOINT")
    scheme, _, host = endpoint.partition("://")
    s3fs = fs.S3FileSystem(
        access_key=stack_setting("XRIDES_S3_ACCESS_KEY"),
        secret_key=stack_setting("XRIDES_S3_SECRET_KEY"),
        endpoint_override=host,
        scheme=scheme,
        region="us-east-1",
    )
    path = f"{stack_setting('XRIDES_S3_BUCKET')}/stack-it/{_unique('rides')}.parquet"
    table = pa.table({"ride_id": [1, 2, 3], "city": ["Lisbon", "Porto", "Faro"], "km": [3.5, 7.0, 1.25]})
    pq.write_table(table, path, filesystem=s3fs)
    try:
        assert pq.read_table(path, filesystem=s3fs).equals(table)
        assert s3fs.get_file_info(path).type == fs.FileType.File
    finally:
        s3fs.delete_file(path)


def test_prometheus_scrapes_itself() -> None:
    url = stack_setting("XRIDES_PROMETHEUS_URL") + "/api/v1/targets"
    deadline = time.monotonic() + 30  # the first scrape happens within one interval (5 s)
    health = "unknown"
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as response:
            payload = json.load(response)
        targets = payload["data"]["activeTargets"]
        own = [t for t in targets if t["labels"].get("job") == "prometheus"]
        assert own, f"no self-scrape target in {targets}"
        health = own[0]["health"]
        if health == "up":
            break
        time.sleep(1)
    assert health == "up"


def test_a_consumer_mirrors_its_stores_offsets_to_kafka_on_assignment() -> None:
    """A member that died between the store's commit and Kafka's leaves Kafka a batch behind; the next
    member starts from the store's offsets and commits them to Kafka at once, so lag readings do not
    report records that were stored long ago (the fault suite waited forever on one such partition)."""
    config = KafkaConfig(stack_setting("XRIDES_KAFKA_BOOTSTRAP"), "stack-it")
    topic, group = _unique("mirror-it"), _unique("mirror-group")
    admin = KafkaAdmin(config, timeout_s=30.0)
    admin.ensure_topics([replace(RIDES, name=topic, partitions=1, cluster_partitions=None)])
    producer = DeliveryProducer(config)
    try:
        producer.send_all([OutRecord(topic, b"{}", key=str(i).encode()) for i in range(5)])
    finally:
        producer.close(timeout_s=10)
    consumer = BatchConsumer(config, group, [topic], start_offsets=lambda _topic, _parts: {0: 5})
    try:
        deadline = time.monotonic() + 30
        while not consumer.owned() and time.monotonic() < deadline:
            assert consumer.poll_batch(10, 0.2, idle_s=0.5) == []  # starts past the five records
        assert consumer.owned() == {(topic, 0)}
        while admin.group_offsets(group, topic, [0]) != {0: 5} and time.monotonic() < deadline:
            consumer.poll_batch(10, 0.2, idle_s=0.5)  # the asynchronous commit completes in a poll
        assert admin.group_offsets(group, topic, [0]) == {0: 5}
    finally:
        consumer.close()
        admin.delete_topics([topic])
