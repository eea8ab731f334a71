"""Deliver a handful of records (dead letters, replays) and return only once Kafka has every one.

A dead letter that is not in its topic is lost, since the offsets behind it are committed right
after; so every record is kept until its delivery report said it was written, and the rest are
sent again after a backoff, for as long as it takes. A resend after an ambiguous failure may
write a record twice. The dead-letter topics are notification streams (the persister's durable
record is its ``ingest_failures`` table, which ``replay`` reads), so a repeat costs a reader a
duplicate it can recognise by the payload and headers; a loss costs the notification.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from xrides.errors import DeliveryAbandoned
from xrides.kafka.config import KafkaConfig
from xrides.request_ids import Position

log = logging.getLogger("xrides.kafka.delivery")


@dataclass(frozen=True)
class OutRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)
    partition: int | None = None  # None: by the key (murmur2), as every producer of the platform


class DeliveryProducer:
    """A blocking, idempotent ``acks=all`` producer for low-volume writes that must all land."""

    def __init__(
        self, config: KafkaConfig, delivery_timeout_ms: int = 30_000, producer: Producer | None = None
    ) -> None:
        """``producer``: a librdkafka producer to use instead of building one (tests script it)."""
        self._flush_timeout_s = delivery_timeout_ms / 1000 + 1
        self._producer = producer or Producer(
            config.producer(delivery_timeout_ms=delivery_timeout_ms, linger_ms=5)
        )

    def deliver_all(
        self, records: Sequence[OutRecord], wait: Callable[[float], object], max_delay_s: float = 10.0
    ) -> int:
        """Send until the broker acknowledged every record; how many attempts it took.

        ``wait(seconds)`` sleeps between attempts: ``time.sleep``, or a stop event's ``wait``, whose
        true answer (stop requested) ends the attempts with ``DeliveryAbandoned``, so a caller that
        commits offsets only afterwards replays the batch after its restart instead of hanging.
        """
        return self._deliver(records, wait, max_delay_s)[0]

    def send_all(
        self, records: Sequence[OutRecord], wait: Callable[[float], object] = time.sleep
    ) -> list[Position]:
        """:meth:`deliver_all`, answering where each record was written (in the order given)."""
        return self._deliver(records, wait, 10.0)[1]

    def _deliver(
        self, records: Sequence[OutRecord], wait: Callable[[float], object], max_delay_s: float
    ) -> tuple[int, list[Position]]:
        positions: list[Position | None] = [None] * len(records)
        pending = list(range(len(records)))
        delay, attempts = 0.5, 0
        while pending:
            attempts += 1
            for index in pending:
                record = records[index]
                # librdkafka's "no partition given" is -1 (RD_KAFKA_PARTITION_UA): the partitioner picks
                partition = -1 if record.partition is None else record.partition
                try:
                    self._producer.produce(
                        record.topic,
                        record.value,
                        record.key,
                        partition,
                        headers=record.headers,
                        on_delivery=_marker(positions, index),
                    )
                except (BufferError, KafkaException) as exc:
                    log.warning("record not sent; retrying", extra={"error.message": str(exc)[:200]})
            self._producer.flush(self._flush_timeout_s)
            pending = [index for index in pending if positions[index] is None]
            if pending:
                log.warning(
                    "records not acknowledged; sending again",
                    extra={"records": len(pending), "retry.delay_s": delay},
                )
                if wait(delay):
                    raise DeliveryAbandoned(f"{len(pending)} records not acknowledged at stop")
                delay = min(delay * 2, max_delay_s)
        return attempts, [p for p in positions if p is not None]

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.flush(timeout_s)


def _marker(positions: list[Position | None], index: int) -> Callable[[KafkaError | None, Message], None]:
    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is None:
            positions[index] = Position(message.partition() or 0, message.offset() or 0)

    return delivered


class LossyProducer:
    """Best effort, for log lines: ``acks=1``, a bounded local queue, and ``send`` never blocks (a
    full queue raises ``BufferError``, which the caller counts as a drop). A lost log line is
    acceptable; a service blocked on its logging is not. ``delivered(ok)`` is told each line's fate
    (from a later ``send`` or ``flush``), so what was shipped and what was lost are both counted."""

    def __init__(self, config: KafkaConfig, max_messages: int = 10_000) -> None:
        conf = config.common()
        conf.update(
            {
                "acks": 1,
                "enable.idempotence": False,
                "linger.ms": 100,
                "message.timeout.ms": 10_000,
                "queue.buffering.max.messages": max_messages,
            }
        )
        self._producer = Producer(conf)

    def send(self, topic: str, value: bytes, delivered: Callable[[bool], None]) -> None:
        self._producer.produce(topic, value, on_delivery=lambda error, _message: delivered(error is None))
        self._producer.poll(0)  # serve delivery reports so they never pile up

    def flush(self, timeout: float | None = None) -> int:
        """Wait for what is queued; the number of lines still undelivered."""
        return int(self._producer.flush(timeout if timeout is not None else 5.0))

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout``, then give up on the rest (their reports say failed)."""
        if self.flush(timeout):
            self._producer.purge()
            self._producer.flush(0)
