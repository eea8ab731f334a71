"""Versioned migrations: numbered SQL files applied once each, recorded in ``schema_migrations``.

Runs under an advisory lock, so two processes starting at once (the API's and the persister's
compose services, say) apply each file exactly once.

Only the schema owner applies migrations. Every process still calls :func:`migrate` at start, with
its own least-privilege role (docs/security.md): when nothing is pending it changes nothing
(a reader just checks), the writer creates the months ahead through ``ensure_ride_partition``,
and a pending migration is a clear :class:`SchemaOutdated` instead of a permission error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg

from xrides.db.rides import contract_objects, fingerprint
from xrides.errors import XRidesError
from xrides.ride import RIDE_FIELDS
from xrides.ride.schemas import Fields

log = logging.getLogger("xrides.db.migrate")

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x58524944  # "XRID"
ROLES = ("xrides_writer", "xrides_reader", "xrides_archiver")


class SchemaOutdated(XRidesError):
    """Migrations are pending and this role may not apply them (run ``persister migrate`` as the owner)."""


def _months_around(today: date, ahead: int) -> list[date]:
    first = today.replace(day=1)
    months = []
    for step in range(-1, ahead + 1):
        index = first.year * 12 + first.month - 1 + step
        months.append(date(index // 12, index % 12 + 1, 1))
    return months


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5803 / 7677), computed here.

    ``ALTER ROLE ... PASSWORD '<verifier>'`` keeps the plain password off the wire and out of the
    server's logs (a failed statement is logged with its text), as psql's ``\\password`` does.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def all_migrations(fields: Fields = RIDE_FIELDS) -> list[tuple[str, str]]:
    """(version, SQL) in order: the numbered files, then the objects rendered from the contract
    (xrides/db/rides.py), each versioned by its text's fingerprint, so a changed rendering is a
    new migration and an unchanged one is applied once."""
    files = [(path.stem, path.read_text()) for path in sorted(MIGRATIONS.glob("*.sql"))]
    rendered = [(f"{name}@{fingerprint(sql)}", sql) for name, sql in contract_objects(fields).items()]
    return files + rendered


async def _pending(conn: asyncpg.Connection, fields: Fields) -> list[tuple[str, str]]:
    wanted = all_migrations(fields)
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return wanted
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [(version, sql) for version, sql in wanted if version not in done]


async def _apply(conn: asyncpg.Connection, pending: list[tuple[str, str]]) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied = []
    for version, sql in pending:
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING", version
            )
        log.info("migration applied", extra={"migration": version})
        applied.append(version)
    return applied


async def set_role_passwords(conn: asyncpg.Connection, passwords: Mapping[str, str]) -> None:
    """Give each login role its password (as a verifier); an empty password leaves the role alone."""
    for role, password in passwords.items():
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if password:
            verifier = scram_verifier(password)
            statement = await conn.fetchval(
                "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)", role, verifier
            )
            await conn.execute(statement)


async def migrate(
    dsn: str,
    months_ahead: int = 3,
    role_passwords: Mapping[str, str] | None = None,
    fields: Fields = RIDE_FIELDS,
) -> list[str]:
    """Apply pending migrations; create partitions from last month to ``months_ahead`` when this
    role may; set the login roles' passwords when given. Returns what ran. ``fields``: the field
    table the contract's objects are rendered from (a test passes one with a field added)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        pending = await _pending(conn, fields)
        try:
            applied = await _apply(conn, pending) if pending else []
        except asyncpg.InsufficientPrivilegeError as exc:
            user = await conn.fetchval("SELECT current_user")
            names = ", ".join(version for version, _ in pending)
            raise SchemaOutdated(
                f"migrations {names} are pending and role {user} may not apply them ({exc}): "
                "run `python -m persister migrate` with the schema owner's XRIDES_PG_DSN"
            ) from exc
        may_partition = await conn.fetchval(
            "SELECT has_function_privilege('ensure_ride_partition(date)', 'EXECUTE')"
        )
        if may_partition:
            for month in _months_around(datetime.now(UTC).date(), months_ahead):
                await conn.execute("SELECT ensure_ride_partition($1)", month)
        # A login role never manages passwords (it may not); the owner does, when asked to.
        if role_passwords and await conn.fetchval("SELECT current_user") not in ROLES:
            await set_role_passwords(conn, role_passwords)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        await conn.close()
