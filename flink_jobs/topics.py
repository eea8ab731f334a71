"""The stream's own topics, created if missing (the broker does not auto-create topics)."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from flink_jobs.settings import StreamSettings


def ensure_topics(settings: StreamSettings, partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="xrides-stream-setup")
    try:
        existing = set(admin.list_topics())
        for name in (settings.actions_topic, settings.es_dlq_topic):
            if name not in existing:
                with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                    admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
