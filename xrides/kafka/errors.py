"""Kafka's errors, translated once into the platform's tree (xrides/errors.py).

librdkafka reports most trouble asynchronously (error callbacks, delivery reports, error messages
in a consumed batch); the few calls that raise do so with ``KafkaException``. Callers of this
package see :class:`~xrides.errors.BrokerUnavailable` (retriable: the broker or the network is
away, a retry may succeed) or :class:`KafkaRefused` (not retriable: the request itself is wrong,
e.g. an unknown topic or a message too large), never a client library's exception.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from xrides.errors import BrokerUnavailable, XRidesError


class KafkaRefused(XRidesError):
    """Kafka answered, and said no for a reason a retry will not change."""

    code = "kafka_refused"


def translate(exc: BaseException, doing: str) -> XRidesError:
    """The platform's error for a client exception raised while ``doing`` something."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(error, KafkaError):
        text = f"Kafka {doing}: {error.str()}"
        if error.retriable() or error.code() in _TRANSIENT:
            return BrokerUnavailable(text, retry_after_s=2)
        return KafkaRefused(text, kafka_code=error.name())
    if isinstance(exc, BufferError):  # the client's local queue is full: back-pressure, not a fault
        return BrokerUnavailable(f"Kafka {doing}: the producer queue is full", retry_after_s=1)
    return BrokerUnavailable(f"Kafka {doing}: {type(exc).__name__}: {exc}"[:300], retry_after_s=2)


# Codes librdkafka does not flag retriable but that mean "not reachable now".
_TRANSIENT = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._WAIT_COORD,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.UNKNOWN_TOPIC_OR_PART,  # metadata not propagated yet right after a create
    }
)
