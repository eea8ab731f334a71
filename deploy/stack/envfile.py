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


def ensure_api_key(path: Path) -> str:
    """Return the development API key, generating it once so it is stable across ``up``."""
    try:
        existing = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


def stack_variables(api_key: str) -> dict[str, str]:
    """Every variable the platform reads to reach the local stack, in file order."""
    return {
        "XRIDES_KAFKA_BOOTSTRAP": settings.KAFKA_BOOTSTRAP,
        "XRIDES_PG_DSN": settings.PG_DSN,
        "XRIDES_ES_URL": settings.ES_URL,
        "XRIDES_S3_ENDPOINT": settings.S3_ENDPOINT,
        "XRIDES_S3_ACCESS_KEY": settings.S3_ACCESS_KEY,
        "XRIDES_S3_SECRET_KEY": settings.S3_SECRET_KEY,
        "XRIDES_S3_BUCKET": settings.S3_BUCKET,
        "XRIDES_PROMETHEUS_URL": settings.PROMETHEUS_URL,
        "XRIDES_API_URL": settings.API_URL,
        "XRIDES_API_KEY": api_key,
    }


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
