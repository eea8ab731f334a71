"""The ``.stack/env`` file: how the platform and the tests find the stack.

It holds ``export`` lines so ``. .stack/env`` works in any POSIX shell, and the
same file is parsed by the integration tests when the variables are not set.
"""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Mapping
from pathlib import Path

from deploy.stack import settings
from deploy.stack.platform import platform_processes
from deploy.stack.topology import Topology

# The least-privilege PostgreSQL login roles (xrides/db/migrations/0004_roles.sql) and the one each
# platform process logs in as; a process not listed here gets no PostgreSQL credentials at all.
PG_ROLES = ("writer", "reader", "archiver")
PROCESS_PG_ROLES = {
    "ingest_service": "reader",
    "persister": "writer",
    "archiver": "archiver",
    "reconcile": "reader",
    "query_service": "reader",
}


def _secret_file(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(content)


def ensure_api_key(path: Path) -> str:
    """Return the development API key, generating it once so it is stable across ``up``."""
    try:
        existing = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    key = secrets.token_urlsafe(32)
    _secret_file(path, key + "\n")
    return key


def ensure_pg_passwords(path: Path) -> dict[str, str]:
    """The login roles' passwords (``role=password`` lines), generated once, stable across ``up``."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        lines = []
    passwords = dict(line.split("=", 1) for line in lines if "=" in line)
    if all(passwords.get(role) for role in PG_ROLES):
        return {role: passwords[role] for role in PG_ROLES}
    passwords = {role: passwords.get(role) or secrets.token_urlsafe(24) for role in PG_ROLES}
    _secret_file(path, "".join(f"{role}={password}\n" for role, password in passwords.items()))
    return passwords


def stack_variables(
    api_key: str, pg_passwords: Mapping[str, str], topology: Topology | None = None, root: Path | None = None
) -> dict[str, str]:
    """Every variable the platform reads to reach the stack, in file order.

    ``XRIDES_PG_DSN`` is the schema owner's (migrations, tests, operators); the launcher gives each
    platform process its own role's DSN instead (:func:`process_env`). The role passwords are
    there for ``persister migrate``, which sets them.
    """
    t = topology or Topology()
    roles: dict[str, str] = {}
    for role in PG_ROLES:
        roles[f"XRIDES_PG_{role.upper()}_DSN"] = t.pg_dsn(f"xrides_{role}", pg_passwords[role])
        roles[f"XRIDES_PG_{role.upper()}_PASSWORD"] = pg_passwords[role]
    processes = platform_processes(t)
    variables = {
        "XRIDES_PROFILE": t.profile,
        "XRIDES_KAFKA_BOOTSTRAP": t.kafka_bootstrap,
        "XRIDES_LOG_KAFKA_BOOTSTRAP": t.kafka_bootstrap,  # logs to Kafka (xrides/logs.py)
        "XRIDES_PG_DSN": t.pg_dsn(),
        "XRIDES_ES_URL": t.es_url,
        "XRIDES_S3_ENDPOINT": t.s3_endpoint,
        "XRIDES_S3_ACCESS_KEY": settings.S3_ACCESS_KEY,
        "XRIDES_S3_SECRET_KEY": settings.S3_SECRET_KEY,
        "XRIDES_S3_BUCKET": settings.S3_BUCKET,
        "XRIDES_PROMETHEUS_URL": t.prometheus_url,
        "XRIDES_API_URL": t.api_url,
        "XRIDES_API_KEY": api_key,
        # where the API forwards POST /v1/query (the query service, query_service/)
        "XRIDES_QUERY_URL": f"http://{t.host}:{t.metrics_port('query-service')}",
        # what the API's GET /v1/health asks besides the stores (every other platform process)
        "XRIDES_HEALTH_PEERS": ",".join(
            f"{p.name}={p.health_url}" for p in processes if p.module != "ingest_service"
        ),
        "XRIDES_FLINK_METRICS_PORT": str(t.metrics_port("flink-reporter")),  # the mini cluster's
        **roles,
    }
    if t.cluster:
        variables |= {
            # reads that may lag a moment (queries, tracking where safe) go to the streaming replica
            "XRIDES_PG_REPLICA_DSN": t.pg_dsn("xrides_reader", pg_passwords["reader"], replica=True),
            "XRIDES_FLINK_REST_URL": t.flink_rest_url,
            "XRIDES_FLINK_PARALLELISM": "2",
            # checkpoints and savepoints on S3 (Flink's S3 filesystem plugin); ``flink run`` reads the
            # JobManager's client configuration and the cluster's lib/ (the Kafka connector)
            "XRIDES_FLINK_STATE_DIR": f"s3://{settings.S3_BUCKET}/flink/checkpoints",
            **(
                {
                    "XRIDES_FLINK_CONF_DIR": str(root / "flink-jobmanager" / "conf"),
                    "XRIDES_FLINK_LIB_DIR": str(root / "flink-lib"),
                }
                if root is not None
                else {}
            ),
            "XRIDES_ES_REPLICAS": "1",
            # idempotency keys and per-key rate limits shared by the API processes (PostgreSQL)
            "XRIDES_SHARED_LIMITS": "postgres",
        }
    return variables


def process_env(module: str, env: Mapping[str, str], own: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one platform process (by its module): its own role's DSN as
    ``XRIDES_PG_DSN`` (and the replica's, for a reader), no other PostgreSQL credential (not the
    owner's, not another role's), and the settings of this process only (``own``: its port)."""
    out = {
        k: v for k, v in env.items() if not (k.startswith("XRIDES_PG_") and k.endswith(("_DSN", "_PASSWORD")))
    }
    role = PROCESS_PG_ROLES.get(module)
    if role is not None:
        out["XRIDES_PG_DSN"] = env[f"XRIDES_PG_{role.upper()}_DSN"]
        if role == "reader" and "XRIDES_PG_REPLICA_DSN" in env:
            out["XRIDES_PG_REPLICA_DSN"] = env["XRIDES_PG_REPLICA_DSN"]
    out.update(own or {})
    return out


def render(variables: Mapping[str, str]) -> str:
    """Shell ``export`` lines; values are quoted only when the shell needs it."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())


def parse(text: str) -> dict[str, str]:
    """Inverse of :func:`render` (also accepts lines without ``export``)."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep:
            continue
        parts = shlex.split(value)
        result[name.strip()] = parts[0] if parts else ""
    return result


def write(path: Path, variables: Mapping[str, str]) -> bool:
    """Write the env file if its content changed; True when it was (re)written."""
    content = render(variables)
    try:
        if path.read_text(encoding="utf-8") == content:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    return True
