"""The platform's Kafka topics: the one registry every process, the launcher and the manifests use.

Each topic is declared once here with what a deployment must know about it: partitions, the
message key, retention, and its replication in a cluster. Settings take their default topic names
from it, ``xrides.kafka.admin.ensure_topics`` creates topics from it, the local launcher and the
cluster profile create theirs from it, and ``docker-compose.yml`` and ``deploy/k8s/kafka-topics.yaml``
are rendered from it (``python -m deploy.render``; a unit test fails when they drift).

Replication: a cluster (compose, Kubernetes, the launcher's ``cluster`` profile) keeps 3 copies and
refuses an ``acks=all`` write unless 2 are in sync; a single local broker keeps 1 of each.
:meth:`Topic.replication_on` is how every creator scales that to the brokers it has, so no topic
can be created with fewer copies than its brokers demand (``rides.es`` once was, in compose, and
no ride reached Elasticsearch).
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    key: str | None  # what the message key holds; None: unkeyed (round-robin)
    retention_ms: int
    description: str
    replication: int = 3  # copies in a cluster of three or more brokers
    min_insync_replicas: int = 2  # copies that must hold a write before acks=all succeeds
    # Partitions in a cluster deployment (compose, Kubernetes, the cluster profile): the most members
    # of one consumer group that can read in parallel during a catch-up; partitions can be added
    # later, never removed, and adding them moves keys. None: as on one broker.
    cluster_partitions: int | None = None

    def replication_on(self, brokers: int) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) on a cluster of ``brokers`` brokers: as many
        copies as there are brokers up to ``replication``, and one fewer of them in sync (so one
        broker can be down) but at least one and at most ``min_insync_replicas``."""
        replication = max(1, min(self.replication, brokers))
        return replication, max(1, min(self.min_insync_replicas, replication - 1))

    def partitions_on(self, brokers: int) -> int:
        """Partitions on a cluster of ``brokers`` brokers (one broker: the local stack)."""
        return self.cluster_partitions or self.partitions if brokers > 1 else self.partitions

    def config(self, brokers: int) -> dict[str, str]:
        """The topic-level configuration a creator sets."""
        _, min_insync = self.replication_on(brokers)
        return {"retention.ms": str(self.retention_ms), "min.insync.replicas": str(min_insync)}


RIDES = Topic(
    "rides",
    6,
    "booking_id",
    7 * DAY_MS,
    "Accepted rides (the ride envelope); all versions of a booking on one partition, in order. "
    "7 days: the replay window of every consumer",
    # 100x XRides' traffic needs 2 persisters and 1-2 Flink subtasks; 12 leaves room for 12
    # consumers during a catch-up without repartitioning (docs/architecture.md).
    cluster_partitions=12,
)
REQUESTS = Topic(
    "requests",
    3,
    None,
    7 * DAY_MS,
    "Batch manifests: the positions of a batch's rides; a batch request id is a position here",
)
REFUSED = Topic(
    "rides.refused",
    3,
    "booking_id",
    7 * DAY_MS,
    "Rides the API refused (422), with their errors: the quarantine's source; a refused request id "
    "is a position here",
)
RIDES_DLQ = Topic(
    "rides.dlq",
    3,
    "booking_id",
    7 * DAY_MS,
    "Messages the persister could not store (poison, refused by PostgreSQL), with the reason",
)
RIDES_ES = Topic(
    "rides.es",
    3,
    "booking_id",
    7 * DAY_MS,
    "The stream job's index/delete actions for the indexer, keyed by booking so a booking's delete "
    "and index land in order; 7 days: an Elasticsearch outage drains without re-running the job",
)
RIDES_ES_DLQ = Topic(
    "rides.es-dlq",
    3,
    "booking_id",
    7 * DAY_MS,
    "Actions Elasticsearch refused for their content, with the reason",
)
LOGS = Topic(
    "logs",
    3,
    None,
    3 * DAY_MS,
    "Every process's JSON log lines, indexed into logs-*",
)

TOPICS: tuple[Topic, ...] = (RIDES, REQUESTS, REFUSED, RIDES_DLQ, RIDES_ES, RIDES_ES_DLQ, LOGS)
BY_NAME: dict[str, Topic] = {topic.name: topic for topic in TOPICS}
