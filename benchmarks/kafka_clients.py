"""kafka-python against librdkafka (confluent-kafka): CPU per record to produce and to consume.

The platform uses one Kafka client library (docs/decisions.md); this is the measurement that chose
it. Each client, in a process of its own so its threads are counted alone, produces ``--records``
ride-sized messages to a scratch topic with the platform's producer settings (acks=all,
idempotent, a 5 ms linger) and then consumes them as a group member in batches, as the persister
does. CPU is the process's (every thread's) user + system time.

    python -m benchmarks.kafka_clients [--records 200000]   # writes benchmarks/results/kafka-clients.json

kafka-python is no longer installed with the platform; to repeat the comparison install it into
the venv first (``.venv/bin/pip install kafka-python==3.0.12``); without it only librdkafka is measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.harness.scenarios import git_commit

RESULTS = Path(__file__).resolve().parent / "results" / "kafka-clients.json"
VALUE = b"x" * 480  # about a ride envelope's size


def _cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


def _librdkafka(bootstrap: str, topic: str, records: int) -> dict[str, float]:
    from confluent_kafka import Consumer, Producer  # noqa: PLC0415 - measured here, on purpose

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    started, cpu = time.perf_counter(), _cpu()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, VALUE, str(i).encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    produced = (time.perf_counter() - started, _cpu() - cpu)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started, cpu = time.perf_counter(), _cpu()
    while seen < records:
        batch = consumer.consume(5000, 1.0)
        seen += sum(1 for m in batch if m.error() is None)
        if batch:
            consumer.commit(asynchronous=False)
    consumed = (time.perf_counter() - started, _cpu() - cpu)
    consumer.close()
    return _figures(records, produced, consumed)


def _kafka_python(bootstrap: str, topic: str, records: int) -> dict[str, float]:
    from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-not-found]  # noqa: PLC0415 - the alternative measured

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    started, cpu = time.perf_counter(), _cpu()
    for i in range(records):
        producer.send(topic, VALUE, key=str(i).encode())
    producer.flush(60)
    produced = (time.perf_counter() - started, _cpu() - cpu)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    seen = 0
    started, cpu = time.perf_counter(), _cpu()
    while seen < records:
        polled = consumer.poll(timeout_ms=1000)
        seen += sum(len(batch) for batch in polled.values())
        if polled:
            consumer.commit()
    consumed = (time.perf_counter() - started, _cpu() - cpu)
    consumer.close()
    return _figures(records, produced, consumed)


def _figures(records: int, produced: tuple[float, float], consumed: tuple[float, float]) -> dict[str, float]:
    return {
        "produce_records_per_s": round(records / produced[0]),
        "produce_cpu_us_per_record": round(produced[1] / records * 1e6, 2),
        "consume_records_per_s": round(records / consumed[0]),
        "consume_cpu_us_per_record": round(consumed[1] / records * 1e6, 2),
    }


def _one(client: str, bootstrap: str, records: int) -> dict[str, float]:
    """Run one client's measurement in a child process and read its figures."""
    topic = f"bench-clients-{client}-{uuid.uuid4().hex[:8]}"
    from xrides.kafka import KafkaAdmin, KafkaConfig  # noqa: PLC0415
    from xrides.topics import RIDES  # noqa: PLC0415

    admin = KafkaAdmin(KafkaConfig(bootstrap, "bench-clients"))
    from dataclasses import replace  # noqa: PLC0415

    admin.ensure_topics([replace(RIDES, name=topic, partitions=6)])
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.kafka_clients", "--child", client, "--topic", topic,
             "--records", str(records), "--bootstrap", bootstrap],
            capture_output=True, text=True, check=True, timeout=900,
        )  # fmt: skip
    finally:
        admin.delete_topics([topic])
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka_clients", description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--bootstrap", default=os.environ.get("XRIDES_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--child", choices=("librdkafka", "kafka-python"))
    parser.add_argument("--topic", default="")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.child:
        measure = _librdkafka if args.child == "librdkafka" else _kafka_python
        print(json.dumps(measure(args.bootstrap, args.topic, args.records)))
        return 0
    clients = ["librdkafka"]
    if importlib.util.find_spec("kafka") is not None:
        clients.append("kafka-python")
    report: dict[str, Any] = {"records": args.records, "runs": {c: [] for c in clients}}
    for _ in range(args.runs):
        for client in clients:
            report["runs"][client].append(_one(client, args.bootstrap, args.records))
    report["git_commit"] = git_commit()
    report["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
