"""The API's only path to durability: an idempotent, ``acks=all`` Kafka producer behind asyncio.

kafka-python is thread based: ``send()`` appends to an in-memory batch and a background sender
thread talks to the broker. We bridge its futures into asyncio futures, so a handler awaits the
broker's acknowledgement without blocking the event loop. Two rules keep the loop responsive:

- ``send()`` is only called once the topic's metadata is known (checked without blocking), because
  kafka-python would otherwise block the caller for up to ``max_block_ms`` fetching it;
- every acknowledgement wait is bounded by ``delivery_timeout_ms`` (kafka-python fails the future)
  and by an asyncio timeout on top, so a dead broker turns into a 503 within a known time, never a
  hang and never a 202 for an unwritten ride.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ingest_service.metrics import PRODUCE_SECONDS
from xrides.errors import BrokerUnavailable
from xrides.request_ids import Position

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    bootstrap: str
    delivery_timeout_ms: int = 5000
    linger_ms: int = 1
    client_id: str = "xrides-api"


class RideProducer:
    """Writes messages and returns their Kafka positions once the broker has them (acks=all)."""

    def __init__(self, config: ProducerConfig) -> None:
        self._config = config
        self._producer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, topics: Sequence[str]) -> None:
        """Connect and learn the topics' partitions (blocking work runs in a thread)."""
        self._loop = asyncio.get_running_loop()
        c = self._config
        self._producer = await asyncio.to_thread(
            KafkaProducer,
            bootstrap_servers=c.bootstrap,
            client_id=c.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=c.linger_ms,
            batch_size=256 * 1024,
            max_request_size=8 * 1024 * 1024,
            # The broker must answer within the delivery timeout; retries happen inside it.
            request_timeout_ms=max(1000, c.delivery_timeout_ms - 500),
            delivery_timeout_ms=c.delivery_timeout_ms,
            max_block_ms=c.delivery_timeout_ms,
            reconnect_backoff_max_ms=1000,
        )
        for topic in topics:
            await asyncio.to_thread(self._producer.partitions_for, topic)

    def ready(self, topic: str) -> bool:
        """Non-blocking: do we know the topic's partitions, and is a connection to a broker up?"""
        producer = self._producer
        if producer is None or producer._metadata.partitions_for_topic(topic) is None:
            return False
        # kafka-python has no public "connected" query; its sender's client knows each broker.
        client = producer._sender._client
        return any(client.connected(broker.node_id) for broker in producer._metadata.brokers())

    async def send_many(
        self,
        topic: str,
        messages: Sequence[tuple[bytes | None, bytes]],
        headers: list[tuple[str, bytes]] | None = None,
    ) -> list[Position | BaseException]:
        """Send all messages; return each one's position, or its error, in order."""
        producer = self._producer
        loop = self._loop
        if producer is None or loop is None or producer._metadata.partitions_for_topic(topic) is None:
            raise BrokerUnavailable("Kafka is not reachable; the rides were not accepted", retry_after_s=2)
        started = time.perf_counter()
        waiters: list[asyncio.Future[Position]] = []
        for key, value in messages:
            waiter: asyncio.Future[Position] = loop.create_future()
            try:
                future = producer.send(topic, value=value, key=key, headers=headers or [])
            except KafkaError as exc:
                waiter.set_exception(exc)
            else:
                future.add_callback(_resolve, loop, waiter)
                future.add_errback(_reject, loop, waiter)
            waiters.append(waiter)
        budget = self._config.delivery_timeout_ms / 1000 + 1.0
        done, pending = await asyncio.wait(waiters, timeout=budget)
        for waiter in pending:
            waiter.cancel()
        PRODUCE_SECONDS.observe(time.perf_counter() - started)
        results: list[Position | BaseException] = []
        for waiter in waiters:
            if waiter in done and waiter.exception() is None:
                results.append(waiter.result())
            elif waiter in done:
                error = waiter.exception()
                results.append(error if error is not None else BrokerUnavailable("no acknowledgement"))
            else:
                results.append(BrokerUnavailable("Kafka did not acknowledge in time"))
        return results

    async def ensure_topic(self, topic: str, partitions: int, retention_ms: int) -> None:
        """Create a topic if it is missing (the launcher creates them too; this covers other setups)."""

        def create() -> None:
            admin = KafkaAdminClient(
                bootstrap_servers=self._config.bootstrap, client_id=self._config.client_id
            )
            try:
                admin.create_topics(
                    [NewTopic(topic, partitions, 1, topic_configs={"retention.ms": str(retention_ms)})]
                )
            except TopicAlreadyExistsError:
                pass
            finally:
                admin.close()

        await asyncio.to_thread(create)

    async def close(self) -> None:
        """Flush what is buffered, then close (graceful stop)."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await asyncio.to_thread(producer.flush, self._config.delivery_timeout_ms / 1000)
            await asyncio.to_thread(producer.close, 5)


def _resolve(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Position], metadata: Any) -> None:
    loop.call_soon_threadsafe(_set_result, waiter, Position(metadata.partition, metadata.offset))


def _reject(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Position], error: BaseException) -> None:
    loop.call_soon_threadsafe(_set_exception, waiter, error)


def _set_result(waiter: asyncio.Future[Position], value: Position) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _set_exception(waiter: asyncio.Future[Position], error: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(error)
