"""Creating the platform's topics from the registry (xrides/topics.py), with the replication the
cluster has, and asking what exists.

The launcher creates every topic before the platform starts; a process calls :func:`ensure_topics`
for its own topics too, so a deployment that skipped that step (or a test's own topics) still
works. A topic that exists is never changed here: partitions can only grow, and growing them moves
keys (booking ids) to other partitions, which is an operator's decision.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from xrides.kafka.config import KafkaConfig
from xrides.kafka.errors import translate
from xrides.topics import Topic

log = logging.getLogger("xrides.kafka.admin")


class KafkaAdmin:
    def __init__(self, config: KafkaConfig, timeout_s: float = 15.0) -> None:
        self._config = config
        self._admin = AdminClient(config.common())
        self._timeout_s = timeout_s
        self._offset_readers: dict[str, Consumer] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the per-group offset readers (the admin client itself holds nothing to release)."""
        with self._lock:
            readers, self._offset_readers = list(self._offset_readers.values()), {}
        for reader in readers:
            reader.close()

    def describe(self) -> tuple[int, dict[str, int]]:
        """(brokers in the cluster, topic name -> partitions) for every topic."""
        try:
            metadata = self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            raise translate(exc, "metadata") from exc
        topics = {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}
        return len(metadata.brokers), topics

    def topic_config(self, name: str) -> dict[str, str]:
        """The topic's effective configuration (for checks of replication and retention)."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        try:
            found = self._admin.describe_configs([resource])[resource].result(self._timeout_s)
        except KafkaException as exc:
            raise translate(exc, "describe configs") from exc
        return {key: entry.value for key, entry in found.items()}

    def ensure_topics(self, topics: Sequence[Topic], partitions: dict[str, int] | None = None) -> list[str]:
        """Create the missing ones (replication from the live broker count); the names created.

        ``partitions`` overrides a topic's partition count by name (the launcher's
        ``XRIDES_RIDES_PARTITIONS``).
        """
        brokers, existing = self.describe()
        missing = [t for t in topics if t.name not in existing]
        if not missing:
            return []
        news = []
        for topic in missing:
            replication, _ = topic.replication_on(brokers)
            count = (partitions or {}).get(topic.name, topic.partitions_on(brokers))
            news.append(NewTopic(topic.name, count, replication, config=topic.config(brokers)))
        created = []
        for name, future in self._admin.create_topics(news, request_timeout=self._timeout_s).items():
            try:
                future.result(self._timeout_s)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # another process was first
                raise translate(exc, f"create topic {name}") from exc
            created.append(name)
            log.info("topic created", extra={"kafka.topic": name})
        return created

    def delete_topics(self, names: Sequence[str]) -> None:
        """Delete topics (tests and benchmarks remove their own); missing ones are ignored."""
        if not names:
            return
        for name, future in self._admin.delete_topics(list(names), request_timeout=self._timeout_s).items():
            try:
                future.result(self._timeout_s)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise translate(exc, f"delete topic {name}") from exc

    def group_offsets(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """A consumer group's committed next offsets for ``topic`` (partitions without one are left out).

        Read by a consumer carrying the group's id that never subscribes (so it never joins the group
        or moves its partitions), not by the admin client: librdkafka 2.x's admin
        ``ListConsumerGroupOffsets`` crashed the process (SIGSEGV in ``rd_kafka_cgrp_op``, from
        ``rd_kafka_handle_OffsetFetch``, on an admin handle that has no consumer group) when a
        three-broker cluster's coordinator answered with an error while a broker was down."""
        with self._lock:
            reader = self._offset_readers.get(group)
            if reader is None:
                reader = Consumer(self._config.consumer(group, **{"enable.partition.eof": False}))
                self._offset_readers[group] = reader
        try:
            found = reader.committed([TopicPartition(topic, p) for p in partitions], timeout=self._timeout_s)
        except KafkaException as exc:
            raise translate(exc, f"offsets of group {group}") from exc
        return {tp.partition: tp.offset for tp in found if tp.error is None and tp.offset >= 0}


def ensure_topics(config: KafkaConfig, topics: Sequence[Topic]) -> list[str]:
    """One-shot :meth:`KafkaAdmin.ensure_topics`."""
    return KafkaAdmin(config).ensure_topics(topics)
