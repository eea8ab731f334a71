"""Settings of the stream job: ``XRIDES_*`` variables, local-stack defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xrides.topics import LOGS, RIDES, RIDES_ES, RIDES_ES_DLQ


@dataclass(frozen=True, slots=True)
class StreamSettings:
    SECRETS: ClassVar[tuple[str, ...]] = ("s3_secret_key",)

    kafka_bootstrap: str = "127.0.0.1:19092"
    es_url: str = "http://127.0.0.1:19200"
    rides_topic: str = RIDES.name
    actions_topic: str = RIDES_ES.name  # the job's output: index/delete actions for the indexer
    es_dlq_topic: str = RIDES_ES_DLQ.name  # created with actions_topic (the indexer writes it)
    flink_group_id: str = "xrides-flink-rides"
    es_rides_prefix: str = "rides-"
    es_demand_prefix: str = "ride-demand-"  # 5-minute demand windows per pickup area
    demand_max_delay_s: int = 60  # watermark: how far out of order booking times may arrive
    demand_lateness_s: int = 1800  # a window is updated by late events for this long after it closed
    logs_topic: str = LOGS.name  # the platform's JSON log lines; empty = the job does not index logs
    es_logs_prefix: str = "logs-"
    hot_days: int = 60  # rides whose pickup is older than this are not indexed (the archive has them)
    reference_time: str = ""  # ISO 8601; empty = now. Moves the hot window for replayed history.
    local_zone: str = "Asia/Kolkata"
    checkpoint_interval_ms: int = 2000
    bundle_size: int = 200  # PyFlink bundles: small ones keep latency low (defaults add seconds)
    bundle_time_ms: int = 100
    # "thread": Python functions run embedded in the JVM (PEMJA): no gRPC hop per record, 2.7x less
    # CPU per ride than "process" (worker processes, PyFlink's default), measured in docs/flink-job.md
    python_execution_mode: str = "thread"
    flink_jars_dir: str = ".stack/downloads/flink-jars/lib"
    # where checkpoints go: a local directory (the mini cluster), or s3://bucket/prefix on a cluster
    # (Flink's S3 filesystem plugin); checkpoints are kept per consumer group below it
    flink_state_dir: str = ".stack/flink"
    flink_restore: str = "latest"  # "latest" retained checkpoint, "none", or a checkpoint path
    job_metrics_port: int = 9102
    flink_metrics_port: int = 9106  # Flink's Prometheus reporter on the mini cluster; 0 = off
    flink_remote: str = ""  # host:port of a JobManager's REST endpoint; empty = local mini cluster
    flink_parallelism: int = 1  # 2 on the cluster profile's two TaskManagers
    # ``submit`` (the session cluster's supervisor): the REST URL it watches, the Flink client
    # configuration ``flink run`` reads (FLINK_CONF_DIR), and the lib/ with the Kafka connector
    flink_rest_url: str = ""
    flink_conf_dir: str = ""
    flink_lib_dir: str = ""
    s3_endpoint: str = "http://127.0.0.1:19000"  # where the cluster's checkpoints are listed
    s3_access_key: str = "xrides"
    s3_secret_key: str = "xrides-secret"  # noqa: S105 - the local stack's documented credential
    s3_region: str = "us-east-1"  # the local S3 server's; a deployment names its own region
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
