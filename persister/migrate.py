"""Versioned migrations: numbered SQL files applied once each, recorded in ``schema_migrations``.

Runs under an advisory lock, so two processes starting at once (the API's and the persister's
compose services, say) apply each file exactly once.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg

log = logging.getLogger("persister.migrate")

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x58524944  # "XRID"


def _months_around(today: date, ahead: int) -> list[date]:
    first = today.replace(day=1)
    months = []
    for step in range(-1, ahead + 1):
        index = first.year * 12 + first.month - 1 + step
        months.append(date(index // 12, index % 12 + 1, 1))
    return months


async def migrate(dsn: str, months_ahead: int = 3) -> list[str]:
    """Apply pending migrations; create partitions from last month to ``months_ahead``. Returns what ran."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.stem in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.stem)
            log.info("migration applied", extra={"migration": path.stem})
            applied.append(path.stem)
        for month in _months_around(datetime.now(UTC).date(), months_ahead):
            await conn.execute("SELECT ensure_ride_partition($1)", month)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        await conn.close()
