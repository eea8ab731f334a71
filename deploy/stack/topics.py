"""The Kafka topics the platform expects to exist (auto-creation is off): the registry's.

Every topic of ``xrides/topics.py`` is created, with the replication and configuration its
``replication_on`` gives for the brokers the profile runs. Which topics exist is asked over the
wire (no JVM); only missing ones cost a ``TopicCommand`` run, so a warm ``up`` does not pay a JVM.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deploy.stack import settings
from deploy.stack.errors import StackError
from deploy.stack.kafkawire import fetch_metadata
from deploy.stack.progress import say
from xrides.topics import RIDES, TOPICS

TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"


@dataclass(frozen=True)
class TopicSpec:
    """A topic as this stack creates it."""

    name: str
    partitions: int
    replication: int = 1
    config: tuple[tuple[str, str], ...] = ()


def wanted_topics(environ: Mapping[str, str], brokers: int = 1) -> list[TopicSpec]:
    """Every registry topic for ``brokers`` brokers; ``rides`` partitions may be overridden by
    ``XRIDES_RIDES_PARTITIONS``."""
    default = RIDES.partitions_on(brokers)
    raw = environ.get("XRIDES_RIDES_PARTITIONS", str(default)).strip() or str(default)
    try:
        rides = int(raw)
    except ValueError:
        rides = 0
    if rides < 1:
        raise StackError(f"XRIDES_RIDES_PARTITIONS must be a positive integer, got {raw!r}")
    specs = []
    for topic in TOPICS:
        partitions = rides if topic is RIDES else topic.partitions_on(brokers)
        replication, _ = topic.replication_on(brokers)
        specs.append(TopicSpec(topic.name, partitions, replication, tuple(topic.config(brokers).items())))
    return specs


def ensure_topics(
    run_class: Sequence[str],
    wanted: Sequence[TopicSpec],
    host: str = settings.HOST,
    port: int = settings.KAFKA_PORT,
) -> list[str]:
    """Create the missing topics with Kafka's TopicCommand; returns the names created.

    ``run_class`` is the java command line up to (not including) the class name.
    """
    existing = fetch_metadata(host, port, all_topics=True).topics
    created: list[str] = []
    for topic in wanted:
        have = existing.get(topic.name)
        if have is not None:
            if have != topic.partitions:
                say(
                    f"kafka: topic {topic.name} has {have} partitions (wanted {topic.partitions}); left as is"
                )
            continue
        cmd = [
            *run_class,
            TOPIC_COMMAND,
            "--bootstrap-server",
            f"{host}:{port}",
            "--create",
            "--if-not-exists",
            "--topic",
            topic.name,
            "--partitions",
            str(topic.partitions),
            "--replication-factor",
            str(topic.replication),
        ]
        for key, value in topic.config:
            cmd += ["--config", f"{key}={value}"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise StackError(f"kafka: creating topic {topic.name} failed (exit {result.returncode}):\n{tail}")
        created.append(topic.name)
    return created
