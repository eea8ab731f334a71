"""The platform's one Kafka layer: every Kafka client of every process is built here.

    KafkaConfig        the librdkafka settings every client shares (config.py)
    AsyncProducer      asyncio, acks=all, idempotent; answers each message's position (producer.py)
    DeliveryProducer   blocking; returns once every record is acknowledged (delivery.py)
    BatchConsumer      a group member handing out bounded batches; commits what it is told (consumer.py)
    TopicReader        reads positions and ranges without a group (reader.py)
    KafkaAdmin         creates topics from the registry (admin.py)

The client library is librdkafka through confluent-kafka, chosen by measurement over kafka-python
(docs/decisions.md). Its exceptions never leave this package: errors.py translates them into the
platform's tree (``BrokerUnavailable``, retriable; ``KafkaRefused``, not).
"""

from xrides.kafka.admin import KafkaAdmin, ensure_topics
from xrides.kafka.config import KafkaConfig
from xrides.kafka.consumer import BatchConsumer, Record
from xrides.kafka.delivery import DeliveryProducer, LossyProducer, OutRecord
from xrides.kafka.errors import KafkaRefused
from xrides.kafka.producer import AsyncProducer, ProducerConfig, ProducerHooks
from xrides.kafka.reader import TopicReader, Watermarks

__all__ = [
    "AsyncProducer",
    "BatchConsumer",
    "DeliveryProducer",
    "KafkaAdmin",
    "KafkaConfig",
    "KafkaRefused",
    "LossyProducer",
    "OutRecord",
    "ProducerConfig",
    "ProducerHooks",
    "Record",
    "TopicReader",
    "Watermarks",
    "ensure_topics",
]
