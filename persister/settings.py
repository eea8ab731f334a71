"""The persister's settings: ``XRIDES_*`` variables, defaults that work with the local stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xrides.topics import REFUSED, RIDES, RIDES_DLQ


@dataclass(frozen=True, slots=True)
class PersisterSettings:
    SECRETS: ClassVar[tuple[str, ...]] = ("pg_writer_password", "pg_reader_password", "pg_archiver_password")

    kafka_bootstrap: str = "127.0.0.1:19092"
    pg_dsn: str = "postgresql://xrides:xrides@127.0.0.1:15432/xrides"
    rides_topic: str = RIDES.name
    refused_topic: str = REFUSED.name  # the API's refusals, kept in the quarantine table
    dlq_topic: str = RIDES_DLQ.name
    group_id: str = "xrides-persister"
    batch_max_rows: int = 5000  # one transaction holds at most this many messages
    batch_max_wait_ms: int = 50  # ...or what arrived within this long
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9101
    retry_max_s: float = 5.0  # cap of the exponential backoff while PostgreSQL is down
    partitions_ahead_months: int = 3  # monthly partitions created ahead of the current month
    log_level: str = "INFO"
    local_zone: str = "Asia/Kolkata"  # `quarantine replay` re-validates dates as the API does
    # `migrate` only (run with the schema owner's pg_dsn): the passwords of the least-privilege
    # login roles it creates (docs/security.md). Empty: that role's password is left as it is.
    pg_writer_password: str = ""
    pg_reader_password: str = ""
    pg_archiver_password: str = ""

    def role_passwords(self) -> dict[str, str]:
        return {
            "xrides_writer": self.pg_writer_password,
            "xrides_reader": self.pg_reader_password,
            "xrides_archiver": self.pg_archiver_password,
        }
