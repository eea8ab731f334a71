"""The ``--check`` flag every platform process has: ask the running process's ``/healthz``."""

from __future__ import annotations

import urllib.request


def check_health(host: str, port: int) -> int:
    """Exit status: 0 when ``http://host:port/healthz`` answers 200 within two seconds, else 1."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1
