"""The asyncio producer: an idempotent, ``acks=all`` write that answers with each message's position.

It is the API's only path to durability, and what any other async writer of the platform uses.

The producer is librdkafka (confluent-kafka): ``produce()`` hands the message to C code that
batches, sends and retries in its own threads without the GIL, so a ride costs a few microseconds
of the event loop's time. Delivery reports come back through ``poll()``, which a dedicated thread
calls; it sleeps in C until there is something to report. Each request's messages are collected
by one ``_Outcomes``, and the event loop is woken once per ``poll()`` for every request that
finished in it, not once per message (a 1,000-ride batch is one wake-up, as are 50 single rides
acknowledged by the same broker response).

Why librdkafka and not kafka-python, which the API used first: profiling at 800 rides/s showed
kafka-python's sender thread and per-send wake-ups (a socket write each) taking more than half of
the API's CPU, all of it under the GIL the handlers need (docs/decisions.md has the comparison).

Rules that keep the 202 honest and the loop responsive:

- ``send_many`` answers 503 at once when the topic's partitions are unknown (the broker has not
  been reachable since start), instead of queueing;
- every acknowledgement wait is bounded by ``message.timeout.ms`` (librdkafka fails the delivery
  report) and by an asyncio timeout on top, so a dead broker turns into a 503 within a known time,
  never a hang and never a 202 for an unwritten ride;
- librdkafka's idempotent producer recovers from timed-out batches itself (it bumps its epoch);
  a *fatal* idempotence error, or a reachable broker that acknowledged nothing for two delivery
  timeouts, replaces the producer with a fresh one (a new producer id). What the old one still
  held was never acknowledged to anyone, so nothing is lost by dropping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException, Message, Producer

from xrides.errors import BrokerUnavailable
from xrides.kafka.config import CLIENT_LOG, KafkaConfig
from xrides.request_ids import Position

log = logging.getLogger(__name__)

_STATS_INTERVAL_MS = 1000
_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    bootstrap: str
    delivery_timeout_ms: int = 5000
    linger_ms: float = 1.0
    client_id: str = "xrides-api"
    max_message_bytes: int = 8 * 1024 * 1024

    def librdkafka(self) -> dict[str, Any]:
        conf = KafkaConfig(self.bootstrap, self.client_id).producer(
            delivery_timeout_ms=self.delivery_timeout_ms, linger_ms=self.linger_ms
        )
        conf.update(
            {"message.max.bytes": self.max_message_bytes, "statistics.interval.ms": _STATS_INTERVAL_MS}
        )
        return conf


@dataclass(frozen=True, slots=True)
class ProducerHooks:
    """What the owner measures: each request's time to acknowledgement, and producer resets."""

    observe_seconds: Callable[[float], None] = lambda _s: None
    reset: Callable[[], None] = lambda: None


class _Client:
    """One librdkafka producer, the thread that polls it, and what its callbacks learned."""

    def __init__(self, config: ProducerConfig, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self.last_ack = time.monotonic()  # the latest acknowledgement (a float store, polling thread)
        self._finished: list[asyncio.Future[None]] = []  # requests done since the last wake-up
        self._finished_lock = threading.Lock()
        self.brokers_up = False
        self.fatal: str | None = None
        self._stopping = threading.Event()
        conf = config.librdkafka()
        conf.update(error_cb=self._on_error, stats_cb=self._on_stats, logger=CLIENT_LOG)
        self.producer = Producer(conf)
        self._thread = threading.Thread(target=self._poll_forever, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll_forever(self) -> None:
        producer = self.producer
        while not self._stopping.is_set():
            producer.poll(_POLL_S)  # delivery reports run _Outcomes callbacks in this thread
            self._wake_loop()

    def _wake_loop(self) -> None:
        if not self._finished:
            return
        with self._finished_lock:  # flush() on shutdown serves callbacks in another thread too
            finished, self._finished = self._finished, []
        if finished:
            # RuntimeError: the loop closed during shutdown; nobody is waiting any more
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_finish_all, finished)

    def finished(self, done: asyncio.Future[None]) -> None:
        with self._finished_lock:
            self._finished.append(done)

    def _on_error(self, error: RdKafkaError) -> None:
        if error.fatal():
            self.fatal = error.str()
            log.error("kafka producer fatal error", extra={"error.message": error.str()[:200]})
        elif error.code() == RdKafkaError._ALL_BROKERS_DOWN:
            self.brokers_up = False

    def _on_stats(self, stats_json: str) -> None:
        brokers = orjson.loads(stats_json).get("brokers", {})
        self.brokers_up = any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers.values())

    def flush(self, timeout_s: float) -> int:
        remaining: int = self.producer.flush(timeout_s)
        self._wake_loop()
        return remaining

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2 * _POLL_S + 1)


class AsyncProducer:
    """Writes messages and returns their Kafka positions once the broker has them (acks=all)."""

    def __init__(self, config: ProducerConfig, hooks: ProducerHooks | None = None) -> None:
        self._config = config
        self._hooks = hooks or ProducerHooks()
        self._client: _Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._topics: tuple[str, ...] = ()
        self._partitions: dict[str, int] = {}
        self._last_reset = 0.0
        self._resetting: asyncio.Lock | None = None
        self._metadata_task: asyncio.Task[None] | None = None
        self.resets = 0
        self._discarding: set[asyncio.Task[None]] = set()

    async def start(self, topics: Sequence[str]) -> None:
        """Create the producer and learn the topics' partitions (in the background if Kafka is down)."""
        self._loop = asyncio.get_running_loop()
        self._topics = tuple(topics)
        self._resetting = asyncio.Lock()
        self._client = _Client(self._config, self._loop)
        await self._learn_topics(timeout_s=self._config.delivery_timeout_ms / 1000)
        self._metadata_task = asyncio.create_task(self._watch_topics())

    async def _learn_topics(self, timeout_s: float) -> None:
        client = self._client
        missing = [t for t in self._topics if t not in self._partitions]
        if client is None or not missing:
            return
        for topic in missing:
            try:
                metadata = await asyncio.to_thread(client.producer.list_topics, topic, timeout_s)
            except KafkaException as exc:
                log.warning("kafka metadata unavailable", extra={"error.message": str(exc)[:200]})
                return
            client.brokers_up = True  # a broker answered; the first statistics come a second later
            found = metadata.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                self._partitions[topic] = len(found.partitions)

    async def _watch_topics(self) -> None:
        """Until every topic's partitions are known, ask again every second."""
        while any(t not in self._partitions for t in self._topics):
            await asyncio.sleep(1.0)
            await self._learn_topics(timeout_s=2.0)

    def ready(self, topic: str) -> bool:
        """Non-blocking: do we know the topic's partitions, and is a connection to a broker up?"""
        client = self._client
        return client is not None and topic in self._partitions and client.brokers_up

    async def send_many(
        self,
        topic: str,
        messages: Sequence[tuple[bytes | None, bytes]],
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> list[Position | BaseException]:
        """Send all messages; return each one's position, or its error, in order."""
        client = self._client
        loop = self._loop
        if client is None or loop is None or topic not in self._partitions:
            raise BrokerUnavailable("Kafka is not reachable; the rides were not accepted", retry_after_s=2)
        started = time.perf_counter()
        tracker = _Outcomes(loop, client, len(messages))
        produce = client.producer.produce
        for index, (key, value) in enumerate(messages):
            try:
                produce(topic, value, key, headers=headers, on_delivery=tracker.callback(index))
            except (BufferError, KafkaException) as exc:  # the local queue is full, or a fatal state
                tracker.failed(index, exc)
        budget = self._config.delivery_timeout_ms / 1000 + 1.0
        await asyncio.wait([tracker.all_done], timeout=budget)  # returns at the budget, never raises
        self._hooks.observe_seconds(time.perf_counter() - started)
        outcomes = tracker.snapshot()
        if client.fatal is not None or any(isinstance(o, BaseException) for o in outcomes):
            await self._reset_if_wedged(topic)
        return outcomes

    async def _reset_if_wedged(self, topic: str) -> None:
        """Replace a producer in a fatal state, or one a reachable broker ignores for two timeouts."""
        client = self._client
        assert client is not None
        assert self._loop is not None
        assert self._resetting is not None
        window = 2 * self._config.delivery_timeout_ms / 1000
        now = time.monotonic()
        wedged = now - client.last_ack >= window and now - self._last_reset >= window and self.ready(topic)
        if not (wedged or client.fatal is not None) or self._resetting.locked():
            return
        async with self._resetting:
            old = client
            self._last_reset = time.monotonic()
            self._client = _Client(self._config, self._loop)
            self.resets += 1
            self._hooks.reset()
            reason = old.fatal or "the broker was reachable but acknowledged nothing"
            log.warning("kafka producer replaced", extra={"error.message": reason[:200]})
        # whatever the old one still holds was never acknowledged; close it off the request path
        task = asyncio.create_task(_discard(old))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    async def close(self) -> None:
        """Flush what is buffered, then stop polling (graceful stop)."""
        if self._metadata_task is not None:
            self._metadata_task.cancel()
        if self._client is not None:
            client, self._client = self._client, None
            remaining = await asyncio.to_thread(client.flush, self._config.delivery_timeout_ms / 1000)
            if remaining:
                log.warning("kafka producer closed with unsent messages", extra={"messages": remaining})
            await asyncio.to_thread(client.stop)


async def _discard(client: _Client) -> None:
    await asyncio.to_thread(client.flush, 0)
    await asyncio.to_thread(client.stop)


class _Outcomes:
    """Collects the delivery reports of one request's messages (called in the polling thread)."""

    __slots__ = ("_client", "_left", "_lock", "_results", "all_done")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: _Client, count: int) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._results: list[Position | BaseException | None] = [None] * count
        self._left = count
        self.all_done: asyncio.Future[None] = loop.create_future()
        if count == 0:
            self.all_done.set_result(None)

    def callback(self, index: int) -> Callable[[RdKafkaError | None, Message], None]:
        def delivered(error: RdKafkaError | None, message: Message) -> None:
            outcome: Position | BaseException
            if error is None:
                self._client.last_ack = time.monotonic()
                outcome = Position(message.partition(), message.offset())  # type: ignore[arg-type]
            else:
                outcome = KafkaException(error)
            if self._record(index, outcome):
                self._client.finished(self.all_done)

        return delivered

    def _record(self, index: int, outcome: Position | BaseException) -> bool:
        """Keep the first outcome of a message; True when it was the request's last one."""
        with self._lock:
            if self._results[index] is not None:
                return False
            self._results[index] = outcome
            self._left -= 1
            return self._left == 0

    def failed(self, index: int, error: BaseException) -> None:
        """A message that never reached librdkafka's queue (in the event loop's thread)."""
        if self._record(index, error) and not self.all_done.done():
            self.all_done.set_result(None)

    def snapshot(self) -> list[Position | BaseException]:
        """Each message's position or error; one still unacknowledged counts as a timeout."""
        with self._lock:
            return [
                r if r is not None else BrokerUnavailable("Kafka did not acknowledge in time")
                for r in self._results
            ]


def _finish_all(done: list[asyncio.Future[None]]) -> None:
    for future in done:
        if not future.done():
            future.set_result(None)
