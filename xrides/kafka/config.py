"""Client configuration: the few settings every client of the platform shares, as librdkafka keys.

One place decides how the platform talks to Kafka, so a setting measured to matter (the
partitioner, fetch sizes, session timeouts) is set for every client alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

# librdkafka's own log lines: not shipped to the logs topic (xrides/logs.py skips ``kafka.*``), so a
# broker outage does not log about itself into the topic it cannot reach.
CLIENT_LOG = logging.getLogger("kafka.librdkafka")


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap: str
    client_id: str

    def common(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.client_id,
            "socket.nagle.disable": True,
            "reconnect.backoff.max.ms": 1000,
            # librdkafka logs every failed connection attempt (several a second while a broker is
            # down); the clients' error callbacks log the outage once instead.
            "log_level": 2,
        }

    def producer(self, *, delivery_timeout_ms: int, linger_ms: float = 1.0) -> dict[str, Any]:
        """An idempotent ``acks=all`` producer: a write is acknowledged once the in-sync replicas
        hold it, and retries inside the delivery timeout never duplicate or reorder."""
        return {
            **self.common(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "message.timeout.ms": delivery_timeout_ms,
            "request.timeout.ms": max(1000, delivery_timeout_ms - 500),
            # murmur2 as in the Java client: every producer of a booking's messages (the API, a
            # replay, the Flink job's Java sink, tests) picks the same partition for its key.
            "partitioner": "murmur2_random",
        }

    def consumer(self, group_id: str, **overrides: Any) -> dict[str, Any]:
        """A group member that commits explicitly, after its sink has applied a batch."""
        return {
            **self.common(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # A killed member's partitions move once its session expires: 10 s, not the 45 s
            # default (the fault suite measured 42 s to recover a killed persister before).
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 3_000,
            # Pre-fetched data held per partition; librdkafka's default (64 MiB) is memory a
            # small consumer does not need to keep up.
            "queued.max.messages.kbytes": 16_384,
            "fetch.max.bytes": 32 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            **overrides,
        }

    def reader(self) -> dict[str, Any]:
        """A consumer that only reads positions it is told (assign + seek): it never joins its group
        or commits, but librdkafka still wants a group id."""
        return self.consumer(f"{self.client_id}-reader", **{"enable.partition.eof": False})
