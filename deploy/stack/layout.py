"""Where the stack keeps its state, resolved once per command.

All state lives under one directory (``<repo>/.stack`` unless ``XRIDES_STACK_DIR``
says otherwise) so that ``down --purge`` and a second stack elsewhere are simple.
The environment is read when a command starts, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy.stack.topology import Topology, resolve_topology

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Layout:
    """Paths of one stack; every service derives its own directories from it."""

    repo: Path
    root: Path
    shared_downloads: Path | None = None  # XRIDES_DOWNLOADS_DIR: artifacts shared with another stack

    @property
    def downloads(self) -> Path:
        """Fetched artifacts; kept by ``down --purge`` because they are slow to fetch. Read-only once
        fetched (every service installs into its own directory), so a second stack (the cluster smoke
        test) can share the first one's with ``XRIDES_DOWNLOADS_DIR``."""
        return self.shared_downloads or self.root / "downloads"

    @property
    def logs(self) -> Path:
        """One ``<name>.log`` per service and platform process."""
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """Pid files and the launcher lock."""
        return self.root / "run"

    @property
    def bin(self) -> Path:
        """Helper scripts for other tools (e.g. ``kafka-run-class`` for benchmarks)."""
        return self.root / "bin"

    @property
    def env_file(self) -> Path:
        """Shell ``export`` lines the platform and tests source."""
        return self.root / "env"

    @property
    def api_key_file(self) -> Path:
        """The development API key, generated once so it is stable across ``up``."""
        return self.root / "api-dev-key"

    @property
    def pg_passwords_file(self) -> Path:
        """The least-privilege PostgreSQL roles' passwords, generated once (``role=password``)."""
        return self.root / "pg-role-passwords"

    @property
    def profile_file(self) -> Path:
        """The profile the stack here was brought up with (``single`` or ``cluster``)."""
        return self.root / "profile"

    def recorded_profile(self) -> str | None:
        try:
            return self.profile_file.read_text(encoding="ascii").strip() or None
        except FileNotFoundError:
            return None

    @property
    def venv_python(self) -> Path:
        """The project venv's interpreter, used for platform processes and hooks."""
        return self.repo / ".venv" / "bin" / "python"

    def venv_site_packages(self) -> list[Path]:
        """The venv's site-packages (for interpreters that do not start from the venv)."""
        return sorted((self.repo / ".venv" / "lib").glob("python3*/site-packages"))

    def service_dir(self, name: str) -> Path:
        """Per-service working area (config, data, installs)."""
        return self.root / name

    def log_file(self, name: str) -> Path:
        """Log of one service or platform process."""
        return self.logs / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        """Pid file of one service or platform process."""
        return self.run / f"{name}.pid"


def resolve_layout(environ: Mapping[str, str], repo: Path = REPO_ROOT) -> Layout:
    """Build the layout, honouring ``XRIDES_STACK_DIR`` so a second stack can live elsewhere (and
    ``XRIDES_DOWNLOADS_DIR`` so it need not fetch the artifacts again)."""
    override = environ.get("XRIDES_STACK_DIR", "").strip()
    root = Path(override).expanduser().resolve() if override else repo / ".stack"
    shared = environ.get("XRIDES_DOWNLOADS_DIR", "").strip()
    downloads = Path(shared).expanduser().resolve() if shared else None
    return Layout(repo=repo, root=root, shared_downloads=downloads)


@dataclass(frozen=True)
class Context:
    """What a command needs: the layout, the stack's topology, and the environment it started with."""

    layout: Layout
    environ: Mapping[str, str] = field(default_factory=dict)
    topology: Topology = field(default_factory=Topology)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Context:
        """Snapshot the environment once, at command start."""
        env = dict(os.environ if environ is None else environ)
        layout = resolve_layout(env)
        return cls(layout=layout, environ=env, topology=resolve_topology(env, layout.recorded_profile()))
