"""The PyFlink job: ``rides`` -> enrichment with per-booking state -> ``rides.es`` actions.

Three pipelines share one job graph, one mini cluster and one Kafka sink (on 2 cores a second JVM
and Python worker pool would cost more than the work): ride documents; 5-minute demand windows per
pickup area (flink_jobs/demand.py), fed by the ride versions the per-booking step accepted; and the
platform's log lines from the ``logs`` topic (flink_jobs/logs.py). All of them emit the indexer's
actions, so every Elasticsearch write goes through the same idempotent, dead-lettering path.

Delivery: the Kafka source's offsets are committed on each completed checkpoint and the Kafka sink
flushes before a checkpoint completes (at-least-once), so after a crash the job resumes from the
last committed offsets and re-emits what was not covered. The actions are idempotent (document id
= booking id, external versions), so what Elasticsearch ends up holding is exactly once.

Locally the job runs on Flink's mini cluster inside this process (``python -m flink_jobs job``). On
a session cluster (the cluster profile, compose) ``python -m flink_jobs submit`` keeps it running:
it submits this file with ``flink run -d -py flink_jobs/rides_job.py graph``, which builds the graph
and hands it to the cluster (flink_jobs/submit.py).

``rides.es`` is keyed by document id (:func:`flink_jobs.actions.keyed`) through the Table API's
Kafka sink, the one PyFlink sink that writes a key apart from the value.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flink_jobs.actions import BookingState, Window, keyed, plan_ride
from flink_jobs.demand import WINDOW_MS, DemandEvent, demand_action, demand_event, late_action
from flink_jobs.logs import log_action
from flink_jobs.settings import StreamSettings
from xrides.health import serve_in_thread
from xrides.kafka import KafkaConfig, ensure_topics
from xrides.ride.enrich import ServiceRegion
from xrides.topics import RIDES_ES, RIDES_ES_DLQ
from xrides.window import parse_reference

log = logging.getLogger("flink_jobs.rides")

JOB_NAME = "xrides-rides-enrichment"
KAFKA_CONNECTOR = "flink-sql-connector-kafka-5.0.0-2.2.jar"
PROMETHEUS_REPORTER = "flink-metrics-prometheus-2.2.1.jar"
PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def connector_jar(settings: StreamSettings, name: str = KAFKA_CONNECTOR) -> Path:
    jar = Path(settings.flink_jars_dir).resolve() / name
    if not jar.is_file():
        raise FileNotFoundError(f"{jar} is missing: `python3 -m deploy.stack up` fetches it")
    return jar


def metrics_config(settings: StreamSettings) -> dict[str, str]:
    """Flink's Prometheus reporter on the mini cluster (its jar is on ``pipeline.jars``)."""
    if not settings.flink_metrics_port or on_cluster(settings):  # a cluster configures its own
        return {}
    return {
        "metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
        # One metric registry serves the mini cluster's job and task manager: one port for both.
        "metrics.reporter.prom.port": str(settings.flink_metrics_port),
    }


def embedded_python_path() -> None:
    """Let the interpreter PEMJA embeds in the JVM (thread mode) import what this process can.

    It starts from the base installation, not this virtualenv, so it would find neither PyFlink's
    own ``pemja`` module nor this project. The JVM inherits ``PYTHONPATH`` from this process when
    the gateway starts, so it is set before the first PyFlink call.
    """
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    current = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, current.split(os.pathsep))])


def latest_checkpoint(state_dir: Path) -> Path | None:
    """The newest completed checkpoint under ``state_dir`` (``<job id>/chk-<n>/_metadata``).

    ``_metadata`` is written last, when a checkpoint completes, so a directory without it (a
    checkpoint cut off by a crash) is never chosen.
    """
    completed = [meta.parent for meta in state_dir.glob("*/chk-*/_metadata")]
    return max(completed, key=lambda chk: (chk / "_metadata").stat().st_mtime, default=None)


def on_cluster(settings: StreamSettings) -> bool:
    """Submitted to a Flink cluster (remote or ``flink run``), not run on a mini cluster here."""
    return bool(settings.flink_remote or settings.flink_rest_url)


def checkpoint_dir(settings: StreamSettings) -> Path:
    """Checkpoints per consumer group: a job started under another group id (a full replay, a
    test's job beside the platform's) never resumes from this one's state."""
    return (Path(settings.flink_state_dir) / settings.flink_group_id).resolve()


def checkpoint_uri(settings: StreamSettings) -> str:
    """:func:`checkpoint_dir` as Flink's URI: a local directory, or on S3 (``s3://bucket/prefix``)."""
    if settings.flink_state_dir.startswith("s3://"):
        return f"{settings.flink_state_dir.rstrip('/')}/{settings.flink_group_id}"
    return checkpoint_dir(settings).as_uri()


def restore_point(settings: StreamSettings) -> Path | None:
    """Where this start resumes from (``XRIDES_FLINK_RESTORE``), pruning older jobs' checkpoints.

    ``latest``: the newest retained checkpoint of the mini cluster's earlier runs; ``none``: the
    committed Kafka offsets only (state rebuilt from the replay); anything else: a checkpoint path.
    A remote cluster restores through its own tooling (``flink run -s``), so nothing is chosen here.
    """
    if on_cluster(settings) or settings.flink_restore == "none":
        return None
    if settings.flink_restore != "latest":
        return Path(settings.flink_restore).resolve()
    state_dir = checkpoint_dir(settings)
    chosen = latest_checkpoint(state_dir)
    for job_dir in state_dir.glob("*"):  # full (hash-map) checkpoints: older jobs' are not needed
        if job_dir.is_dir() and (chosen is None or job_dir != chosen.parent):
            shutil.rmtree(job_dir, ignore_errors=True)
    return chosen


def configuration(settings: StreamSettings, submitted: bool = False) -> tuple[Any, list[Path]]:
    """Flink's configuration for this job, and the connector jars it ships. A job ``submitted``
    by ``flink run`` ships none: the cluster's lib/ holds the connector, and the CLI has already
    set the cluster's address."""
    from pyflink.common import Configuration  # noqa: PLC0415

    conf = Configuration()
    conf.set_string("execution.checkpointing.dir", checkpoint_uri(settings))
    # Completed checkpoints outlive the job (a SIGKILL leaves them), and the next start resumes
    # from the newest: keyed state and Kafka positions as of that checkpoint.
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    _python_settings(conf, settings)
    if submitted:
        return conf, []
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    jars = [connector_jar(settings)]
    metrics = metrics_config(settings)
    if metrics:
        jars.append(connector_jar(settings, PROMETHEUS_REPORTER))
    conf.set_string("pipeline.jars", ";".join(jar.as_uri() for jar in jars))
    for key, value in metrics.items():
        conf.set_string(key, value)
    conf.set_string("taskmanager.memory.process.size", "768m")
    restore = restore_point(settings)
    if restore is not None:
        conf.set_string("execution.state-recovery.path", restore.as_uri())
        # an operator added since (or a renamed one) starts empty instead of failing the start
        conf.set_string("execution.state-recovery.ignore-unclaimed-state", "true")
        log.info("restoring from checkpoint", extra={"flink.checkpoint": str(restore)})
    if settings.flink_remote:  # submit to a Flink cluster instead of the mini cluster
        host, _, port = settings.flink_remote.partition(":")
        conf.set_string("execution.target", "remote")
        conf.set_string("rest.address", host)
        conf.set_string("rest.port", port or "8081")
    else:  # a mini cluster picks free ports, so several jobs (tests beside `make up`'s) can run
        conf.set_string("rest.bind-port", "0")
    return conf, jars


def _python_settings(conf: Any, settings: StreamSettings) -> None:
    conf.set_string("python.fn-execution.bundle.size", str(settings.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(settings.bundle_time_ms))
    conf.set_string("python.execution-mode", settings.python_execution_mode)


def kafka_source(settings: StreamSettings, topic: str, group_id: str) -> Any:
    """A source of raw messages, resuming from the group's offsets committed on checkpoints.

    Latin-1 maps every byte to one character, so any payload (even poison) survives the trip
    into Python and is turned back into the original bytes there.
    """
    from pyflink.common.serialization import SimpleStringSchema  # noqa: PLC0415
    from pyflink.datastream.connectors.kafka import (  # noqa: PLC0415
        KafkaOffsetResetStrategy,
        KafkaOffsetsInitializer,
        KafkaSource,
    )

    return (
        KafkaSource.builder()
        .set_bootstrap_servers(settings.kafka_bootstrap)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
        .set_value_only_deserializer(SimpleStringSchema("ISO-8859-1"))
        .set_property("commit.offsets.on.checkpoint", "true")
        .build()
    )


def action_type() -> Any:
    """A ``rides.es`` record: the key (document id, or null) and the action's JSON."""
    from pyflink.common import Types  # noqa: PLC0415

    return Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])


def as_record(action: dict[str, Any]) -> Any:
    from pyflink.common import Row  # noqa: PLC0415

    return Row(*keyed(action))


def attach_actions_sink(env: Any, actions: Any, settings: StreamSettings) -> None:
    """The indexer's topic, keyed, at least once (the actions are idempotent): the Table API's
    Kafka sink with a raw key and a raw value, attached to the DataStream job."""
    from pyflink.table import DataTypes, Schema, StreamTableEnvironment, TableDescriptor  # noqa: PLC0415

    tables = StreamTableEnvironment.create(env)
    columns = Schema.new_builder().column("k", DataTypes.STRING()).column("v", DataTypes.STRING()).build()
    sink = (
        TableDescriptor.for_connector("kafka")
        .schema(columns)
        .option("topic", settings.actions_topic)
        .option("properties.bootstrap.servers", settings.kafka_bootstrap)
        .option("key.format", "raw")
        .option("key.fields", "k")
        .option("value.format", "raw")
        .option("value.fields-include", "EXCEPT_KEY")
        .option("sink.delivery-guarantee", "at-least-once")
        .build()
    )
    tables.create_temporary_table("rides_es", sink)
    statements = tables.create_statement_set()
    statements.add_insert("rides_es", tables.from_data_stream(actions))
    statements.attach_as_datastream()


def booking_key(raw: str) -> tuple[str, str]:
    """The envelope's booking id, cheaply; poison gets one shared key (it is dead-lettered anyway)."""
    marker = raw.find('"booking_id":')
    if marker < 0:
        return "?", raw
    end = raw.find(",", marker)
    return raw[marker + 13 : end].strip(), raw


def ride_pipeline(env: Any, settings: StreamSettings, demand_tag: Any) -> Any:
    """rides -> keyed by booking -> index/delete actions; accepted versions to ``demand_tag``."""
    from pyflink.common import Types, WatermarkStrategy  # noqa: PLC0415
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext  # noqa: PLC0415
    from pyflink.datastream.state import ValueStateDescriptor  # noqa: PLC0415

    window = Window(settings.hot_days, parse_reference(settings.reference_time))
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
            actions, envelope = plan_ride(value[1].encode("latin-1"), state, window, zone, region, prefix)
            self.index.update(state.index or "")  # state values cannot be None
            self.version.update(state.version)
            for action in actions:
                yield as_record(action)
            if envelope is not None:  # an accepted version: one event for the demand windows
                yield demand_tag, demand_event(envelope).as_tuple()

    source = kafka_source(settings, settings.rides_topic, settings.flink_group_id)
    return (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "rides")
        .uid("rides-source")
        .map(booking_key, output_type=Types.TUPLE([Types.STRING(), Types.STRING()]))
        .uid("booking-key")
        .key_by(lambda pair: pair[0], key_type=Types.STRING())
        .process(Plan(), output_type=action_type())
        .uid("plan")
    )


def demand_pipelines(rides: Any, settings: StreamSettings, demand_tag: Any, late_tag: Any) -> list[Any]:
    """5-minute demand windows per pickup area (event time starts here: only accepted ride
    versions carry a booking time), and the late events' skip actions."""
    from pyflink.common import Duration, Time, Types, WatermarkStrategy  # noqa: PLC0415
    from pyflink.common.watermark_strategy import TimestampAssigner  # noqa: PLC0415
    from pyflink.datastream import ProcessWindowFunction  # noqa: PLC0415
    from pyflink.datastream.window import TumblingEventTimeWindows  # noqa: PLC0415

    window = Window(settings.hot_days, parse_reference(settings.reference_time))
    demand_prefix = settings.es_demand_prefix

    class BookingTime(TimestampAssigner):  # type: ignore[misc]
        def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
            return int(value[4])

    class Demand(ProcessWindowFunction):  # type: ignore[misc]
        """One firing of one area's 5-minute window: the whole window's counts, as an index action."""

        def process(self, key: str, context: Any, elements: Any) -> Any:
            span = context.window()
            events = [DemandEvent.from_tuple(e) for e in elements]
            oldest_ms = int(window.oldest().timestamp() * 1000)
            now_ms = context.current_processing_time()
            yield as_record(
                demand_action(key, span.start, span.end, events, demand_prefix, oldest_ms, now_ms)
            )

    windows = (
        rides.get_side_output(demand_tag)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy.for_bounded_out_of_orderness(
                Duration.of_seconds(settings.demand_max_delay_s)
            ).with_timestamp_assigner(BookingTime())
        )
        .key_by(lambda event: event[0], key_type=Types.STRING())
        .window(TumblingEventTimeWindows.of(Time.milliseconds(WINDOW_MS)))
        .allowed_lateness(settings.demand_lateness_s * 1000)
        .side_output_late_data(late_tag)
        .process(Demand(), output_type=action_type())
        .uid("demand-windows")
    )
    late = windows.get_side_output(late_tag).map(
        lambda event: as_record(late_action(DemandEvent.from_tuple(event))), output_type=action_type()
    )
    return [windows, late]


def logs_pipeline(env: Any, settings: StreamSettings) -> Any:
    """The platform's log lines as index actions for ``logs-*``."""
    from pyflink.common import WatermarkStrategy  # noqa: PLC0415

    logs_prefix = settings.es_logs_prefix
    source = kafka_source(settings, settings.logs_topic, f"{settings.flink_group_id}-logs")
    return (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "logs")
        .uid("logs-source")
        .map(lambda raw: as_record(log_action(raw.encode("latin-1"), logs_prefix)), output_type=action_type())
    )


def build(settings: StreamSettings, submitted: bool = False) -> Any:
    """The job graph (PyFlink is imported here: it starts a JVM gateway)."""
    if settings.python_execution_mode == "thread":
        embedded_python_path()
    from pyflink.common import Types  # noqa: PLC0415
    from pyflink.datastream import CheckpointingMode, OutputTag, StreamExecutionEnvironment  # noqa: PLC0415
    from pyflink.util.java_utils import add_jars_to_context_class_loader  # noqa: PLC0415

    conf, jars = configuration(settings, submitted)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    # ``pipeline.jars`` ships the jars to the job; the client side (this gateway, which builds the
    # KafkaSource) must see them too. Left to chance, the gateway sometimes lacked them on a
    # restart ("Could not found the Java class ...KafkaSource.builder"): add them explicitly.
    if jars:
        add_jars_to_context_class_loader([jar.as_uri() for jar in jars])
    env.set_parallelism(settings.flink_parallelism)
    env.enable_checkpointing(settings.checkpoint_interval_ms, CheckpointingMode.AT_LEAST_ONCE)

    class Tag(OutputTag):  # type: ignore[misc]
        """PyFlink's tag drops the tuple's Java type when pickled, not its fields' (py4j objects)."""

        def __getstate__(self) -> Any:
            for field in getattr(self.type_info, "_field_types", ()):
                field._j_typeinfo = None
            return super().__getstate__()

    demand_type = Types.TUPLE([Types.STRING(), Types.STRING(), Types.LONG(), Types.INT(), Types.LONG()])
    demand_tag = Tag("demand", demand_type)
    late_tag = Tag("demand-late", demand_type)
    rides = ride_pipeline(env, settings, demand_tag)
    outputs = demand_pipelines(rides, settings, demand_tag, late_tag)
    if settings.logs_topic:
        outputs.append(logs_pipeline(env, settings))
    attach_actions_sink(env, rides.union(*outputs), settings)
    return env


def ensure_action_topics(settings: StreamSettings) -> None:
    """The job's output topics, as the registry declares them (the brokers' count decides the
    replication: a three-broker cluster gets three copies and ``min.insync.replicas`` 2)."""
    kafka = KafkaConfig(settings.kafka_bootstrap, "xrides-stream-setup")
    ensure_topics(
        kafka,
        [replace(RIDES_ES, name=settings.actions_topic), replace(RIDES_ES_DLQ, name=settings.es_dlq_topic)],
    )


def run(settings: StreamSettings) -> None:
    """The job in this process: on the mini cluster, or attached to a remote cluster."""
    ensure_action_topics(settings)
    env = build(settings)
    # Healthy once the job graph is built and handed to Flink (execute() blocks for the job's life).
    serve_in_thread(settings.metrics_host, settings.job_metrics_port, lambda: ({"status": "ok"}, True))
    log.info("rides job starting", extra={"kafka.topic": settings.rides_topic})
    env.execute(JOB_NAME)


def submit_graph(settings: StreamSettings) -> None:
    """Under ``flink run -d -py``: build the graph and hand it to the cluster, then return."""
    ensure_action_topics(settings)
    env = build(settings, submitted=True)
    log.info("rides job submitted", extra={"kafka.topic": settings.rides_topic})
    env.execute(JOB_NAME)


if __name__ == "__main__":  # ``flink run -py flink_jobs/rides_job.py graph``
    from flink_jobs.cli import main

    raise SystemExit(main(sys.argv[1:] or ["job"]))
