"""Integration fixtures: the real local stack (``make up``) and platform processes started per test.

Connection settings come from the environment or, failing that, from ``.stack/env`` written by the
launcher. A service that is not there fails the test: nothing here ever skips.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAST = "test_zzz_main_data_reconciles.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The reconciler over the main data runs after every other test of the session (unit and
    client tests included: the hook sees the whole session's items), so whatever any of them wrote
    has been checked."""
    items.sort(key=lambda item: LAST in item.nodeid)


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip().removeprefix("export ").strip()
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value.strip().strip("'\"")
    return values


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """Every XRIDES_* connection setting, from the environment first, then ``.stack/env``."""
    stack_dir = Path(os.environ.get("XRIDES_STACK_DIR", REPO / ".stack"))
    values = _read_env_file(stack_dir / "env")
    values.update({k: v for k, v in os.environ.items() if k.startswith("XRIDES_")})
    required = ("XRIDES_KAFKA_BOOTSTRAP", "XRIDES_PG_DSN")
    missing = [name for name in required if not values.get(name)]
    if missing:
        pytest.fail(f"the local stack is not configured ({', '.join(missing)} unset): run `make up`")
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s} s")


class PlatformProcess:
    """A platform process run exactly as deployed: ``python -m <module>`` with XRIDES_* settings."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.module = module
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def start_api(
    stack_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., tuple[str, PlatformProcess]]]:
    """Start an API process on a free port with extra settings; stopped (SIGTERM) after the test."""
    started: list[PlatformProcess] = []

    def start(**overrides: str) -> tuple[str, PlatformProcess]:
        port = free_port()
        env = {**os.environ, **stack_env, "XRIDES_API_PORT": str(port), "XRIDES_API_HOST": "127.0.0.1"}
        env.update({f"XRIDES_{k.upper()}": v for k, v in overrides.items()})
        process = PlatformProcess("ingest_service", env, tmp_path / f"api-{port}.log")
        process.start()
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/readyz", 60, process.proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"API did not become ready: {exc}\n{process.log_tail()}")
        return base, process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_query_service(
    stack_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., tuple[str, PlatformProcess]]]:
    """Start a query service on a free port with extra settings (an API started with its own keys
    forwards queries to one that knows them: ``start_api(query_url=...)``); stopped after the test."""
    started: list[PlatformProcess] = []

    def start(**overrides: str) -> tuple[str, PlatformProcess]:
        port = free_port()
        env = {**os.environ, **stack_env, "XRIDES_QUERY_PORT": str(port)}
        env.update({f"XRIDES_{k.upper()}": v for k, v in overrides.items()})
        process = PlatformProcess("query_service", env, tmp_path / f"query-{port}.log")
        process.start()
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + "/healthz", 60, process.proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"the query service did not start: {exc}\n{process.log_tail()}")
        return base, process

    yield start
    for process in started:
        process.stop()
