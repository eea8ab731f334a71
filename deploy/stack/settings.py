"""The platform's fixed local-stack defaults: ports, credentials, versions.

These values are a contract with the rest of the platform (its config defaults,
tests and docs use them), so they live in one place and are not configurable
per run; a second stack elsewhere changes only ``XRIDES_STACK_DIR``.
"""

from __future__ import annotations

HOST = "127.0.0.1"

PG_PORT = 15432
PG_USER = "xrides"
PG_PASSWORD = "xrides"  # noqa: S105 - local development credential, documented
PG_DATABASE = "xrides"
PG_BIN = "/usr/lib/postgresql/15/bin"
PG_PACKAGE = "postgresql-15"

KAFKA_PORT = 19092
KAFKA_CONTROLLER_PORT = 19093
KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.25.3"
# Kafka's own poms still pull slf4j-api 1.7, which cannot see the log4j-slf4j2 binding.
SLF4J_VERSION = "2.0.17"

ES_PORT = 19200
ES_TRANSPORT_PORT = 19300
ES_VERSION = "9.2.4"

S3_PORT = 19000
S3_VERSION = "3.0.0"
S3_ACCESS_KEY = "xrides"
S3_SECRET_KEY = "xrides-secret"  # noqa: S105 - local development credential, documented
S3_BUCKET = "xrides-archive"
S3_REGION = "us-east-1"

PROMETHEUS_PORT = 19090
PROMETHEUS_BIN = "/usr/bin/prometheus"
PROMTOOL_BIN = "/usr/bin/promtool"
PROMETHEUS_PACKAGE = "prometheus"
SCRAPE_INTERVAL = "5s"
# Flink's Prometheus reporter on the job's mini cluster (flink_jobs StreamSettings.flink_metrics_port);
# scraped as job "flink", the name docker-compose's Prometheus gives its JobManager and TaskManagers.
FLINK_METRICS_PORT = 9106

API_PORT = 8000
API_URL = f"http://127.0.0.1:{API_PORT}"
# The platform processes' health and metrics ports (the API's is its own port).
METRICS_PORTS = {
    "persister": 9101,
    "flink-job": 9102,
    "es-indexer": 9103,
    "archiver": 9104,
    "reconcile": 9105,
    "flink-reporter": 9106,  # Flink's Prometheus reporter in the mini cluster (single profile)
    "query-service": 9107,
}
# The cluster profile's Flink session cluster: REST, and fixed ports for each process (so a
# firewall-less laptop and the smoke test's second stack never collide on a random one).
FLINK_REST_PORT = 18081
FLINK_PORTS = {
    "jobmanager-rpc": 16123,
    "blob": 16124,
    "taskmanager-rpc": 16130,  # + index
    "taskmanager-data": 16140,  # + index
    "reporter": 9110,  # + 0 for the JobManager, + index for a TaskManager
}
HAPROXY_PACKAGE = "haproxy"
HAPROXY_BIN = "/usr/sbin/haproxy"

PG_DSN = f"postgresql://{PG_USER}:{PG_PASSWORD}@{HOST}:{PG_PORT}/{PG_DATABASE}"
KAFKA_BOOTSTRAP = f"{HOST}:{KAFKA_PORT}"
ES_URL = f"http://{HOST}:{ES_PORT}"
S3_ENDPOINT = f"http://{HOST}:{S3_PORT}"
PROMETHEUS_URL = f"http://{HOST}:{PROMETHEUS_PORT}"
