"""Settings of the dashboards tools: ``XRIDES_*`` variables, defaults that work with the local stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    SECRETS: ClassVar[tuple[str, ...]] = ("kibana_password",)

    kibana_url: str = "http://127.0.0.1:5601"
    kibana_user: str = ""  # empty: no authentication (Kibana without security)
    kibana_password: str = ""
    kibana_space: str = ""  # empty: the default space
    kibana_timeout_s: float = 60.0
    kibana_attempts: int = 10  # Kibana answers 503 for a while after its health check passes
