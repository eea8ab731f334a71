"""Connection settings for the integration tests, without a conftest.

The harness normally sources ``.stack/env`` before running pytest; when a
variable is missing (e.g. pytest run straight from an IDE), the value is read
from the env file the launcher wrote. A missing value is an error, never a
reason to skip: the integration suite exists to prove the stack is there.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def env_file() -> Path:
    """Where the launcher writes its env file (honours ``XRIDES_STACK_DIR``)."""
    override = os.environ.get("XRIDES_STACK_DIR", "").strip()
    root = Path(override).expanduser() if override else REPO_ROOT / ".stack"
    return root / "env"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``export NAME=value`` lines (shell-quoted values)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    for raw in text.splitlines():
        line = raw.strip().removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if sep and name and not name.startswith("#"):
            parts = shlex.split(value)
            values[name] = parts[0] if parts else ""
    return values


def stack_setting(name: str) -> str:
    """The value of ``name`` from the environment, else from ``.stack/env``; fails if neither has it."""
    value = os.environ.get(name)
    if value:
        return value
    path = env_file()
    value = read_env_file(path).get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set and not in {path}; start the stack first: python3 -m deploy.stack up"
        )
    return value
