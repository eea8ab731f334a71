"""The shape of one stack: its profile (one node of everything, or the cluster) and its ports.

``single`` is the local stack ``make up`` runs: one Kafka broker, one Elasticsearch node, one
PostgreSQL, the platform on a Flink mini cluster. ``cluster`` (``make cluster-up``) runs every engine
as the production topology does, on this one machine: three KRaft Kafka brokers (combined
broker+controller nodes), three Elasticsearch nodes, a PostgreSQL primary with a streaming replica,
a Flink session cluster (a JobManager and two TaskManagers), and two API processes behind HAProxy.
Both give the API the same port.

Every port is a base plus ``XRIDES_PORT_OFFSET`` (default 0), so a second stack (the cluster smoke
test of ``make test``, say) runs beside the first with ``XRIDES_STACK_DIR`` and an offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deploy.stack import settings
from deploy.stack.errors import StackError

PROFILES = ("single", "cluster")


@dataclass(frozen=True)
class Topology:
    profile: str = "single"
    offset: int = 0

    @property
    def cluster(self) -> bool:
        return self.profile == "cluster"

    # -- how many ------------------------------------------------------------------------------
    @property
    def brokers(self) -> int:
        return 3 if self.cluster else 1

    @property
    def es_nodes(self) -> int:
        return 3 if self.cluster else 1

    @property
    def apis(self) -> int:
        """API processes (behind HAProxy in the cluster)."""
        return 2 if self.cluster else 1

    @property
    def taskmanagers(self) -> int:
        return 2 if self.cluster else 0

    # -- where ---------------------------------------------------------------------------------
    def _at(self, base: int) -> int:
        return base + self.offset

    @property
    def host(self) -> str:
        return settings.HOST

    @property
    def pg_port(self) -> int:
        return self._at(settings.PG_PORT)

    @property
    def pg_replica_port(self) -> int:
        return self._at(settings.PG_PORT + 1)

    def kafka_port(self, node: int) -> int:
        return self._at(settings.KAFKA_PORT + 2 * (node - 1))

    def kafka_controller_port(self, node: int) -> int:
        return self._at(settings.KAFKA_CONTROLLER_PORT + 2 * (node - 1))

    def es_port(self, node: int) -> int:
        return self._at(settings.ES_PORT + node - 1)

    def es_transport_port(self, node: int) -> int:
        return self._at(settings.ES_TRANSPORT_PORT + node - 1)

    @property
    def s3_port(self) -> int:
        return self._at(settings.S3_PORT)

    @property
    def prometheus_port(self) -> int:
        return self._at(settings.PROMETHEUS_PORT)

    @property
    def api_port(self) -> int:
        """Where clients reach the API: the API itself, or HAProxy in front of the API processes."""
        return self._at(settings.API_PORT)

    def api_backend_port(self, index: int) -> int:
        """API process ``index`` (1-based); in the single profile the API is the front itself."""
        return self.api_port + index if self.cluster else self.api_port

    def metrics_port(self, name: str) -> int:
        return self._at(settings.METRICS_PORTS[name])

    @property
    def flink_rest_port(self) -> int:
        return self._at(settings.FLINK_REST_PORT)

    def flink_port(self, role: str, index: int = 0) -> int:
        """Fixed ports of the session cluster's processes (rpc, blob, data, metrics reporter)."""
        return self._at(settings.FLINK_PORTS[role] + index)

    # -- addresses -----------------------------------------------------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"{self.host}:{self.kafka_port(n)}" for n in range(1, self.brokers + 1))

    @property
    def es_url(self) -> str:
        """Every node's URL, comma-separated (the platform's clients accept a list)."""
        return ",".join(f"http://{self.host}:{self.es_port(n)}" for n in range(1, self.es_nodes + 1))

    def pg_dsn(
        self, user: str = settings.PG_USER, password: str = settings.PG_PASSWORD, replica: bool = False
    ) -> str:
        port = self.pg_replica_port if replica else self.pg_port
        return f"postgresql://{user}:{password}@{self.host}:{port}/{settings.PG_DATABASE}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def flink_rest_url(self) -> str:
        return f"http://{self.host}:{self.flink_rest_port}"


def resolve_topology(environ: Mapping[str, str], recorded: str | None) -> Topology:
    """The profile asked for (``XRIDES_PROFILE``), else the one the stack directory records, else
    single; ``XRIDES_PORT_OFFSET`` moves every port."""
    profile = environ.get("XRIDES_PROFILE", "").strip() or (recorded or "single")
    if profile not in PROFILES:
        raise StackError(f"XRIDES_PROFILE must be one of {', '.join(PROFILES)}, not {profile!r}")
    raw = environ.get("XRIDES_PORT_OFFSET", "0").strip() or "0"
    try:
        offset = int(raw)
    except ValueError as exc:
        raise StackError(f"XRIDES_PORT_OFFSET must be an integer, not {raw!r}") from exc
    if not 0 <= offset <= 20_000:
        raise StackError("XRIDES_PORT_OFFSET must be within 0..20000")
    return Topology(profile, offset)
