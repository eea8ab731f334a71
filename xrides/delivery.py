"""Deliver a handful of records (dead letters) through a kafka-python producer, surviving an outage.

kafka-python's ``send`` returns a future that fails quietly when the broker never acknowledged
(after ``delivery.timeout``), and ``flush`` raises when its own timeout passes first; neither is
an error a consumer may drop on the floor: a dead letter that is not in its topic is lost, since
the offsets behind it are committed right after. So every record is kept until its future
succeeded, and the rest are sent again after a backoff, for as long as it takes. A resend after
an ambiguous failure may write a dead letter twice. The dead-letter topics are notification streams
(the persister's durable record is its ``ingest_failures`` table, which ``replay`` reads), so a
repeat costs a reader a duplicate it can recognise by the payload and headers; a loss costs the
notification.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError

from xrides.errors import DeliveryAbandoned

log = logging.getLogger("xrides.delivery")


@dataclass(frozen=True)
class Record:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def deliver_all(
    producer: KafkaProducer,
    records: Sequence[Record],
    wait: Callable[[float], object],
    flush_timeout_s: float = 30.0,
    max_delay_s: float = 10.0,
) -> int:
    """Send until the broker acknowledged every record; how many attempts it took.

    ``wait(seconds)`` sleeps between attempts: ``time.sleep``, or a stop event's ``wait``, whose
    true answer (stop requested) ends the attempts with ``DeliveryAbandoned``, so a caller that
    commits offsets only afterwards replays the batch after its restart instead of hanging.
    """
    pending = list(records)
    delay, attempts = 0.5, 0
    while pending:
        attempts += 1
        sent = []
        for record in pending:
            try:
                future = producer.send(
                    record.topic, key=record.key, value=record.value, headers=record.headers
                )
            except KafkaError as exc:  # no metadata within max_block_ms: the broker is away
                log.warning("dead letter not sent; retrying", extra={"error.message": str(exc)[:200]})
                future = None
            sent.append((record, future))
        try:
            producer.flush(timeout=flush_timeout_s)
        except KafkaError as exc:
            log.warning("dead letters not flushed; retrying", extra={"error.message": str(exc)[:200]})
        pending = [r for r, f in sent if f is None or not (f.is_done and f.succeeded())]
        if pending:
            log.warning(
                "dead letters not acknowledged; sending again",
                extra={"records": len(pending), "retry.delay_s": delay},
            )
            if wait(delay):
                raise DeliveryAbandoned(f"{len(pending)} dead letters not acknowledged at stop")
            delay = min(delay * 2, max_delay_s)
    return attempts
