"""The unprivileged ``xrides`` user that PostgreSQL and Elasticsearch run as.

Both refuse to run as root, and the launcher usually runs as root (CI, dev
containers), so it creates a system user and hands it the service directories.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from deploy.stack.errors import StackError

SERVICE_USER = "xrides"


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def ensure_user(name: str = SERVICE_USER) -> None:
    """Create the system user once; a no-op when it exists or when we are not root."""
    if _exists(name):
        return
    if os.geteuid() != 0:
        raise StackError(
            f"user {name} does not exist and only root can create it (sudo useradd --system {name})"
        )
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"could not create user {name}: {result.stderr.strip() or result.stdout.strip()}")


def run_as(name: str = SERVICE_USER) -> str | None:
    """User to pass to Popen: ``name`` when we are root, else None (run as ourselves)."""
    return name if os.geteuid() == 0 else None


def chown_tree(path: Path, name: str = SERVICE_USER) -> None:
    """Give ``path`` and everything below it to the service user (only root can).

    A tree whose top already belongs to the user is skipped: the services create
    their files as that user, and walking a big data directory on every ``up``
    would make a warm ``up`` slow.
    """
    if os.geteuid() != 0 or not path.exists():
        return
    entry = pwd.getpwnam(name)
    uid, gid = entry.pw_uid, entry.pw_gid
    top = path.lstat()
    if top.st_uid == uid and top.st_gid == gid:
        return
    targets = [path]
    if path.is_dir():
        targets.extend(path.rglob("*"))
    for target in targets:
        try:
            stat = target.lstat()
            if stat.st_uid != uid or stat.st_gid != gid:
                os.lchown(target, uid, gid)
        except FileNotFoundError:
            continue


def chown_one(path: Path, name: str = SERVICE_USER) -> None:
    """Give a single file or directory we just wrote to the service user (only root can)."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(name)
    os.chown(path, entry.pw_uid, entry.pw_gid)
