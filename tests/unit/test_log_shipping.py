"""The Kafka log handler (xrides/logs.py): emit never waits, a full queue drops and counts."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson

from xrides.logs import JsonFormatter, KafkaLogHandler, LogSettings, setup_logging


class SlowProducer:
    """A producer stand-in whose sends wait until released (a broker that does not answer)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.sent: list[bytes] = []

    def send(self, topic: str, value: bytes, delivered: Any) -> None:
        self.release.wait(10)
        self.sent.append(value)
        delivered(True)

    def flush(self, timeout: float | None = None) -> int:
        return 0

    def close(self, timeout: float | None = None) -> None:
        return


def record(name: str = "xrides.test", message: str = "hello") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    release = threading.Event()
    producer = SlowProducer(release)
    handler = KafkaLogHandler("unused:9092", "logs", capacity=5, producer_factory=lambda _: producer)
    handler.setFormatter(JsonFormatter("svc", event_ids=True))
    began = time.perf_counter()
    for i in range(100):
        handler.emit(record(message=f"line {i}"))
    assert time.perf_counter() - began < 0.5, "emit waited for the producer"
    assert handler.dropped >= 100 - 5 - 1  # the queue, and at most one line in the shipper's hands
    release.set()
    handler.close()
    assert len(producer.sent) + handler.dropped == 100
    line = orjson.loads(producer.sent[0])
    assert line["service.name"] == "svc"
    assert line["event.id"]


def test_kafka_client_records_and_the_shippers_own_are_not_shipped() -> None:
    release = threading.Event()
    release.set()
    producer = SlowProducer(release)
    handler = KafkaLogHandler("unused:9092", "logs", producer_factory=lambda _: producer)
    handler.setFormatter(JsonFormatter("svc"))
    handler.emit(record("kafka.conn", "broker down"))
    handler.emit(record("kafka", "broker down"))
    handler.emit(record("kafkaesque", "ours"))
    handler.close()
    assert [orjson.loads(v)["message"] for v in producer.sent] == ["ours"]


def test_an_unreachable_broker_drops_and_counts() -> None:
    def refuse(_: str) -> Any:
        raise ConnectionError("no broker")

    handler = KafkaLogHandler("unused:9092", "logs", producer_factory=refuse)
    handler.setFormatter(JsonFormatter("svc"))
    for _ in range(10):
        handler.emit(record())
    handler.close()
    assert handler.dropped == 10


def test_setup_logging_adds_the_kafka_handler_only_when_configured() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        setup_logging("svc", shipping=LogSettings())
        assert not any(isinstance(h, KafkaLogHandler) for h in root.handlers)
        setup_logging("svc", shipping=LogSettings(log_kafka_bootstrap="127.0.0.1:1", log_kafka_queue=10))
        shippers = [h for h in root.handlers if isinstance(h, KafkaLogHandler)]
        assert len(shippers) == 1
        setup_logging("svc", shipping=LogSettings())  # idempotent: the shipper is removed and closed
        assert not any(isinstance(h, KafkaLogHandler) for h in root.handlers)
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_xrides", False):
                root.removeHandler(handler)
                handler.close()
        for handler in before:
            if handler not in root.handlers:
                root.addHandler(handler)


def test_the_stack_ships_logs_and_scrapes_the_flink_reporter_where_the_job_serves_it() -> None:
    from deploy.stack import configs, envfile  # noqa: PLC0415
    from deploy.stack import settings as stack  # noqa: PLC0415
    from flink_jobs.settings import StreamSettings  # noqa: PLC0415

    assert envfile.render({"XRIDES_LOG_KAFKA_BOOTSTRAP": stack.KAFKA_BOOTSTRAP})
    assert StreamSettings().flink_metrics_port == stack.FLINK_METRICS_PORT
    assert StreamSettings().logs_topic == LogSettings().log_kafka_topic
    text = configs.prometheus_yml([("flink", f"{stack.HOST}:{stack.FLINK_METRICS_PORT}")], None)
    assert '"flink"' in text and f"{stack.HOST}:{stack.FLINK_METRICS_PORT}" in text
