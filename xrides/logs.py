"""Structured JSON logs: one line per event, Elastic Common Schema field names.

Every platform process calls :func:`setup_logging` once in ``main()``. Context such as the request
id or the Kafka partition/offset goes in ``extra=`` and lands as top-level keys, so a log search
can join the API's lines with the persister's by ``request.id`` or ``booking_id``.

With ``XRIDES_LOG_KAFKA_BOOTSTRAP`` set (the local stack's ``.stack/env`` sets it), every line also
goes to the Kafka ``logs`` topic through :class:`KafkaLogHandler`, which the Flink job indexes into
``logs-*``. That handler never blocks or fails the service: lines wait in a bounded queue for a
background thread, and are dropped (and counted) when the queue is full or Kafka is unreachable.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from prometheus_client import Counter

from xrides.settings import load_settings
from xrides.topics import LOGS

LOG_LINES_DROPPED = Counter(
    "xrides_logs_kafka_dropped_total", "Log lines not shipped to Kafka, by reason", ["reason"]
)
LOG_LINES_SENT = Counter("xrides_logs_kafka_sent_total", "Log lines the broker acknowledged")

# LogRecord's own attributes; anything else on a record came from ``extra=``.
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, event_ids: bool = False) -> None:
        super().__init__()
        self.service = service
        self.event_ids = event_ids  # a unique ``event.id`` makes re-indexing a line idempotent

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "@timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "service.name": self.service,
            "message": record.getMessage(),
        }
        if self.event_ids:
            doc["event.id"] = uuid.uuid4().hex
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["error.stack_trace"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Where log lines are shipped besides stdout (``XRIDES_LOG_KAFKA_*``); empty bootstrap = nowhere."""

    log_kafka_bootstrap: str = ""
    log_kafka_topic: str = LOGS.name
    log_kafka_queue: int = 10_000  # lines held while Kafka is slow; more are dropped and counted


class _Producer(Protocol):
    """Queues a line and tells ``delivered(ok)`` later whether the broker has it."""

    def send(self, topic: str, value: bytes, delivered: Callable[[bool], None]) -> Any: ...
    def flush(self, timeout: float | None = None) -> int: ...
    def close(self, timeout: float | None = None) -> None: ...


def _kafka_producer(bootstrap: str) -> _Producer:
    from xrides.kafka import KafkaConfig, LossyProducer  # noqa: PLC0415 - only when shipping

    return LossyProducer(KafkaConfig(bootstrap, "xrides-logs"))


class KafkaLogHandler(logging.Handler):
    """Ships formatted lines to a Kafka topic from a background thread; ``emit`` never waits.

    Records of the ``kafka`` loggers (the client's own) and of the shipping thread are not shipped:
    a broker outage would otherwise log about itself into the queue it cannot drain.
    """

    RETRY_SECONDS = 5.0

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        capacity: int = 10_000,
        producer_factory: Callable[[str], _Producer] = _kafka_producer,
    ) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.topic = topic
        self.queue: queue.Queue[bytes] = queue.Queue(maxsize=capacity)
        self.dropped = 0
        self.sent = 0
        self._factory = producer_factory
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._ship, name="xrides-log-shipper", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        own = record.name == "kafka" or record.name.startswith("kafka.")
        if own or threading.current_thread() is self._thread:
            return
        try:
            line = self.format(record).encode()
        except Exception:
            self._drop("format")
            return
        try:
            self.queue.put_nowait(line)
        except queue.Full:
            self._drop("queue_full")

    def _drop(self, reason: str, count: int = 1) -> None:
        self.dropped += count
        LOG_LINES_DROPPED.labels(reason).inc(count)

    def _ship(self) -> None:
        producer: _Producer | None = None
        retry_at = 0.0
        while not (self._closing.is_set() and self.queue.empty()):
            try:
                line = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if producer is None and time.monotonic() >= retry_at:
                try:
                    producer = self._factory(self.bootstrap)
                except Exception:
                    retry_at = time.monotonic() + self.RETRY_SECONDS
            if producer is None:  # Kafka unreachable: drop rather than hold the service's memory
                self._drop("kafka_unavailable")
                continue
            try:
                producer.send(self.topic, line, self._delivered)
            except BufferError:  # the client's own queue is full: Kafka has been away a while
                self._drop("queue_full")
            except Exception:
                self._drop("send_failed")
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(2)  # what is still undelivered after that is reported as failed

    def _delivered(self, ok: bool) -> None:
        """A line's fate, from the producer (in the shipping thread)."""
        if ok:
            self.sent += 1
            LOG_LINES_SENT.inc()
        else:
            self._drop("kafka_unavailable")

    def close(self) -> None:
        """Ship what is queued for up to a few seconds, then stop (called by logging at exit)."""
        self._closing.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)
        while True:  # what an unreachable broker kept us from sending is counted, not forgotten
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
            self._drop("shutdown")
        super().close()


def setup_logging(service: str, level: str = "INFO", shipping: LogSettings | None = None) -> None:
    """Send every logger's records to stdout as JSON lines, and to Kafka if configured (idempotent).

    ``shipping`` defaults to the ``XRIDES_LOG_KAFKA_*`` variables (this runs in ``main()``).
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_xrides", False):
            root.removeHandler(old)
            old.close()
    handler: logging.Handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler._xrides = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    shipping = shipping if shipping is not None else load_settings(LogSettings)
    if shipping.log_kafka_bootstrap:
        handler = KafkaLogHandler(
            shipping.log_kafka_bootstrap, shipping.log_kafka_topic, shipping.log_kafka_queue
        )
        handler.setFormatter(JsonFormatter(service, event_ids=True))
        handler._xrides = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
    # librdkafka's own lines (logger "kafka.librdkafka", xrides/kafka) are chatty at INFO about
    # every reconnect; its warnings still come through.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # The Elasticsearch client logs every request at INFO: one line per bulk request, which the
    # logs pipeline would index with another bulk request, for ever.
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
