"""The API's only path to durability: an idempotent, ``acks=all`` Kafka producer behind asyncio.

kafka-python is thread based: ``send()`` appends to an in-memory batch and a background sender
thread talks to the broker. We bridge its futures into asyncio futures, so a handler awaits the
broker's acknowledgement without blocking the event loop. Two rules keep the loop responsive:

- ``send()`` is only called once the topic's metadata is known (checked without blocking), because
  kafka-python would otherwise block the caller for up to ``max_block_ms`` fetching it;
- every acknowledgement wait is bounded by ``delivery_timeout_ms`` (kafka-python fails the future)
  and by an asyncio timeout on top, so a dead broker turns into a 503 within a known time, never a
  hang and never a 202 for an unwritten ride.

A producer can also wedge: when a broker dies under load, batches expire inside kafka-python's
idempotent producer and leave gaps in its per-partition sequence numbers, which the restarted broker
refuses for ever after (kafka-python does not bump the producer epoch as the Java client does). The
fault suite found it: after `kill -9` of the broker and a restart, every request got 503 until the
API was restarted. So when the broker is reachable again but nothing has been acknowledged for two
delivery timeouts, the producer is replaced by a fresh one (a new producer id, sequences from 0).
What the old one still held was never acknowledged to anyone, so nothing is lost by dropping it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ingest_service.metrics import PRODUCE_SECONDS, PRODUCER_RESETS
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
        self._topics: tuple[str, ...] = ()
        self._last_ack = time.monotonic()  # written by kafka-python's sender thread (a float store)
        self._last_reset = 0.0
        self._resetting: asyncio.Lock | None = None
        self.resets = 0
        self._discarding: set[asyncio.Task[None]] = set()

    async def start(self, topics: Sequence[str]) -> None:
        """Connect and learn the topics' partitions (blocking work runs in a thread)."""
        self._loop = asyncio.get_running_loop()
        self._topics = tuple(topics)
        self._resetting = asyncio.Lock()
        self._producer = await self._new_producer()
        self._last_ack = time.monotonic()

    async def _new_producer(self) -> Any:
        c = self._config
        producer = await asyncio.to_thread(
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
        for topic in self._topics:
            await asyncio.to_thread(producer.partitions_for, topic)
        return producer

    async def _reset_if_wedged(self, topic: str) -> None:
        """Replace a producer that a reachable broker has not acknowledged for two delivery timeouts."""
        window = 2 * self._config.delivery_timeout_ms / 1000
        now = time.monotonic()
        if now - self._last_ack < window or now - self._last_reset < window or not self.ready(topic):
            return
        assert self._resetting is not None
        if self._resetting.locked():
            return
        async with self._resetting:
            old = self._producer
            self._last_reset = time.monotonic()
            try:
                self._producer = await self._new_producer()
            except KafkaError as exc:
                log.warning("kafka producer reset failed", extra={"error.message": str(exc)[:200]})
                return
            self._last_ack = time.monotonic()
            self.resets += 1
            PRODUCER_RESETS.inc()
            log.warning("kafka producer replaced: the broker was reachable but acknowledged nothing")
        # whatever the old one still holds was never acknowledged; close it off the request path
        task = asyncio.create_task(self._discard(old))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    @staticmethod
    async def _discard(producer: Any) -> None:
        try:
            await asyncio.to_thread(producer.close, 0)
        except Exception as exc:  # its unsent batches fail their (already answered) requests' futures
            log.info("old kafka producer closed with an error", extra={"error.message": str(exc)[:200]})

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
        tracker = _Outcomes(loop, len(messages), self._acknowledged)
        for index, (key, value) in enumerate(messages):
            try:
                future = producer.send(topic, value=value, key=key, headers=headers or [])
            except KafkaError as exc:
                tracker.failed(index, exc)
            else:
                future.add_callback(tracker.succeeded, index)
                future.add_errback(tracker.failed, index)
        budget = self._config.delivery_timeout_ms / 1000 + 1.0
        await asyncio.wait([tracker.all_done], timeout=budget)  # returns at the budget, never raises
        PRODUCE_SECONDS.observe(time.perf_counter() - started)
        outcomes = tracker.snapshot()
        if any(isinstance(o, BaseException) for o in outcomes):
            await self._reset_if_wedged(topic)
        return outcomes

    def _acknowledged(self) -> None:
        self._last_ack = time.monotonic()

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


class _Outcomes:
    """Collects the acknowledgements of one request's messages from kafka-python's sender thread.

    One wake-up of the event loop per request, not per message: a batch of 1,000 rides would
    otherwise cost 1,000 cross-thread calls (each a write to the loop's self-pipe).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, count: int, on_ack: Callable[[], None] | None = None
    ) -> None:
        self._loop = loop
        self._on_ack = on_ack
        self._lock = threading.Lock()
        self._results: list[Position | BaseException | None] = [None] * count
        self._left = count
        self.all_done: asyncio.Future[None] = loop.create_future()
        if count == 0:
            self.all_done.set_result(None)

    def _settle(self, index: int, outcome: Position | BaseException) -> None:
        with self._lock:
            if self._results[index] is not None:
                return
            self._results[index] = outcome
            self._left -= 1
            finished = self._left == 0
        if finished:
            self._loop.call_soon_threadsafe(_finish, self.all_done)

    def succeeded(self, index: int, metadata: Any) -> None:
        self._settle(index, Position(metadata.partition, metadata.offset))
        if self._on_ack is not None:
            self._on_ack()

    def failed(self, index: int, error: BaseException) -> None:
        self._settle(index, error)

    def snapshot(self) -> list[Position | BaseException]:
        """Each message's position or error; one still unacknowledged counts as a timeout."""
        with self._lock:
            return [
                r if r is not None else BrokerUnavailable("Kafka did not acknowledge in time")
                for r in self._results
            ]


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
