"""The PyFlink job: ``rides`` -> enrichment with per-booking state -> ``rides.es`` actions.

Delivery: the Kafka source's offsets are committed on each completed checkpoint and the Kafka sink
flushes before a checkpoint completes (at-least-once), so after a crash the job resumes from the
last committed offsets and re-emits what was not covered. The actions are idempotent (document id
= booking id, external versions), so what Elasticsearch ends up holding is exactly once.

Locally the job runs on Flink's mini cluster inside this process; in compose it is submitted with
``flink run -py flink_jobs/rides_job.py``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flink_jobs.actions import BookingState, Window, encode, plan
from flink_jobs.enrich import ServiceRegion
from flink_jobs.health import serve_health
from flink_jobs.settings import StreamSettings
from flink_jobs.topics import ensure_topics
from xrides.window import parse_reference

log = logging.getLogger("flink_jobs.rides")

KAFKA_CONNECTOR = "flink-sql-connector-kafka-5.0.0-2.2.jar"


def connector_jar(settings: StreamSettings) -> Path:
    jar = Path(settings.flink_jars_dir).resolve() / KAFKA_CONNECTOR
    if not jar.is_file():
        raise FileNotFoundError(f"{jar} is missing: `python3 -m deploy.stack up` fetches it")
    return jar


def build(settings: StreamSettings) -> Any:
    """The job graph (PyFlink is imported here: it starts a JVM gateway)."""
    from pyflink.common import Configuration, Types, WatermarkStrategy  # noqa: PLC0415
    from pyflink.common.serialization import SimpleStringSchema  # noqa: PLC0415
    from pyflink.datastream import (  # noqa: PLC0415
        CheckpointingMode,
        KeyedProcessFunction,
        RuntimeContext,
        StreamExecutionEnvironment,
    )
    from pyflink.datastream.connectors.base import DeliveryGuarantee  # noqa: PLC0415
    from pyflink.datastream.connectors.kafka import (  # noqa: PLC0415
        KafkaOffsetResetStrategy,
        KafkaOffsetsInitializer,
        KafkaRecordSerializationSchema,
        KafkaSink,
        KafkaSource,
    )
    from pyflink.datastream.state import ValueStateDescriptor  # noqa: PLC0415

    conf = Configuration()
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("pipeline.jars", connector_jar(settings).as_uri())
    conf.set_string("python.fn-execution.bundle.size", str(settings.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(settings.bundle_time_ms))
    conf.set_string("taskmanager.memory.process.size", "768m")
    conf.set_string("execution.checkpointing.dir", Path(settings.flink_state_dir).resolve().as_uri())
    if settings.flink_remote:  # submit to a Flink cluster (compose) instead of the mini cluster
        host, _, port = settings.flink_remote.partition(":")
        conf.set_string("execution.target", "remote")
        conf.set_string("rest.address", host)
        conf.set_string("rest.port", port or "8081")
    else:  # a mini cluster picks free ports, so several jobs (tests beside `make up`'s) can run
        conf.set_string("rest.bind-port", "0")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    env.enable_checkpointing(settings.checkpoint_interval_ms, CheckpointingMode.AT_LEAST_ONCE)

    # Latin-1 maps every byte to one character, so any payload (even poison) survives the trip
    # into Python and is turned back into the original bytes there.
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(settings.kafka_bootstrap)
        .set_topics(settings.rides_topic)
        .set_group_id(settings.flink_group_id)
        .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
        .set_value_only_deserializer(SimpleStringSchema("ISO-8859-1"))
        .set_property("commit.offsets.on.checkpoint", "true")
        .build()
    )
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(settings.kafka_bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(settings.actions_topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )
    reference = parse_reference(settings.reference_time)
    window = Window(settings.hot_days, reference)
    zone = ZoneInfo(settings.local_zone)
    region = ServiceRegion()
    prefix = settings.es_rides_prefix

    class Plan(KeyedProcessFunction):  # type: ignore[misc]
        """Keyed by booking: remembers where the booking's current version is indexed."""

        def open(self, runtime_context: RuntimeContext) -> None:
            self.index = runtime_context.get_state(ValueStateDescriptor("index", Types.STRING()))
            self.version = runtime_context.get_state(ValueStateDescriptor("version", Types.LONG()))

        def process_element(self, value: tuple[str, str], ctx: Any) -> Any:
            state = BookingState(self.index.value() or None, self.version.value() or 0)
            actions = plan(value[1].encode("latin-1"), state, window, zone, region, prefix)
            self.index.update(state.index or "")  # state values cannot be None
            self.version.update(state.version)
            for action in actions:
                yield encode(action)

    def booking_key(raw: str) -> tuple[str, str]:
        # The envelope's booking id, cheaply; poison gets one shared key (it is dead-lettered anyway).
        marker = raw.find('"booking_id":')
        if marker < 0:
            return "?", raw
        end = raw.find(",", marker)
        return raw[marker + 13 : end].strip(), raw

    (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "rides")
        .map(booking_key, output_type=Types.TUPLE([Types.STRING(), Types.STRING()]))
        .key_by(lambda pair: pair[0], key_type=Types.STRING())
        .process(Plan(), output_type=Types.STRING())
        .sink_to(sink)
    )
    return env


def run(settings: StreamSettings) -> None:
    ensure_topics(settings)
    env = build(settings)
    # Healthy once the job graph is built and handed to Flink (execute() blocks for the job's life).
    serve_health(settings.metrics_host, settings.job_metrics_port, lambda: True)
    log.info("rides job starting", extra={"kafka.topic": settings.rides_topic})
    env.execute("xrides-rides-enrichment")


if __name__ == "__main__":
    from flink_jobs.cli import main

    raise SystemExit(main(["job"]))
