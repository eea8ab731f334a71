"""Small HTTP helpers for health checks, with short timeouts.

Health checks run in polling loops and in ``status``; a hanging request would
make both feel broken, so every call is bounded and never raises.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class HttpResult:
    """Status and body of a finished request; status 0 means no HTTP answer at all."""

    status: int
    body: bytes

    def json(self) -> object:
        """Decoded JSON body, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def http_request(
    url: str, method: str = "GET", headers: Mapping[str, str] | None = None, timeout: float = 2.0
) -> HttpResult:
    """Perform one request; HTTP errors are results, connection failures are status 0."""
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return HttpResult(status=response.status, body=response.read())
    except urllib.error.HTTPError as exc:
        return HttpResult(status=exc.code, body=exc.read() if exc.fp else b"")
    except (OSError, ValueError):
        return HttpResult(status=0, body=b"")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True for a 2xx answer."""
    return 200 <= http_request(url, timeout=timeout).status < 300
