"""A database of its own, on the platform's PostgreSQL server, for a test or a benchmark that
writes: created and migrated on entry, dropped (connections and all) on exit, so nothing it writes
or deletes can touch the platform's own rides."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from xrides.db.migrate import migrate


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead (same server, same role)."""
    return dsn.rsplit("/", 1)[0] + "/" + name


@asynccontextmanager
async def scratch_database(owner_dsn: str, name: str, migrated: bool = True) -> AsyncIterator[str]:
    """Create database ``name`` (the schema owner's DSN creates it), migrate it, yield its DSN, and
    drop it at the end, even if the body failed."""
    if not re.fullmatch(r"[a-z0-9_]{1,63}", name) or name in ("xrides", "postgres"):
        raise ValueError(f"not a scratch database name: {name!r}")
    admin = await asyncpg.connect(owner_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(owner_dsn, name)
    try:
        if migrated:
            await migrate(dsn)
        yield dsn
    finally:
        admin = await asyncpg.connect(owner_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
