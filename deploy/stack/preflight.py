"""Checks that turn confusing start-up failures into one clear line.

A Java service whose port is taken dies with a long stack trace; a full disk
makes Kafka and Elasticsearch misbehave long after start. Checking up front
lets the launcher name the actual cause.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.errors import StackError

MIN_FREE_BYTES = 2 * 1024**3
_LISTEN = "0A"


@dataclass(frozen=True)
class PortOwner:
    """Who listens on a port, as far as /proc tells (pid may be unknown)."""

    pid: int | None
    command: str

    def describe(self) -> str:
        """Human label for error messages."""
        return f"pid {self.pid} ({self.command})" if self.pid is not None else "an unknown process"


def port_taken(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts connections on ``host:port``.

    Connecting (rather than binding) is what matters: a listener on 0.0.0.0 or on
    127.0.0.1 both make our bind fail, and a connect sees both.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` according to /proc/net/tcp{,6}."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == _LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def port_owner(port: int) -> PortOwner:
    """Best-effort lookup of the process listening on ``port`` (needs root for others' fds)."""
    inodes = _listening_inodes(port)
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    raw = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    return PortOwner(pid=int(entry.name), command=" ".join(raw.split())[:100])
        except (FileNotFoundError, PermissionError, ProcessLookupError, NotADirectoryError):
            continue
    return PortOwner(pid=None, command="unknown")


def ensure_ports_free(service: str, ports: tuple[int, ...]) -> None:
    """Fail clearly when a port we need is held by a process this stack does not track."""
    for port in ports:
        if port_taken(port):
            owner = port_owner(port)
            raise StackError(
                f"{service}: port {port} is already taken by {owner.describe()}, which is not part "
                f"of this stack; stop it (or run 'down' for the stack that owns it) and retry"
            )


def ensure_disk_space(path: Path, minimum: int = MIN_FREE_BYTES) -> None:
    """Kafka and Elasticsearch misbehave on a nearly full disk; refuse to start there."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < minimum:
        raise StackError(
            f"low disk space: {free / 1024**3:.1f} GiB free under {probe}, need at least "
            f"{minimum / 1024**3:.0f} GiB; free some space and retry"
        )


def ensure_traversable(path: Path, user: str) -> None:
    """The unprivileged service user must be able to reach the stack directory."""
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & stat.S_IXOTH:
            raise StackError(
                f"user {user} cannot reach {path}: {parent} is not world-traversable (chmod o+x {parent}), "
                f"or set XRIDES_STACK_DIR to a directory it can reach"
            )
