"""Least-privilege PostgreSQL roles (xrides/db/migrations/0004_roles.sql) on the real stack.

Every write a role must not make is tried for real; the ones it may make run in a transaction that
is rolled back, so the shared database is left as it was.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import asyncpg
import pytest
import pytest_asyncio

from xrides.db.migrate import SchemaOutdated, all_migrations, migrate

pytestmark = pytest.mark.integration

DENIED = (asyncpg.InsufficientPrivilegeError,)


def _this_month() -> date:
    return datetime.now(UTC).date().replace(day=1)


@pytest_asyncio.fixture
async def connect(stack_env: dict[str, str]) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    conns = {
        role: await asyncpg.connect(stack_env[f"XRIDES_PG_{role.upper()}_DSN"])
        for role in ("writer", "reader", "archiver")
    }
    yield conns
    for conn in conns.values():
        await conn.close()


async def _refused(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    tx = conn.transaction()
    await tx.start()
    try:
        with pytest.raises(DENIED):
            await conn.execute(sql, *args)
    finally:
        await tx.rollback()  # were it allowed after all, nothing is kept


async def _allowed(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(sql, *args)
    finally:
        await tx.rollback()


async def test_the_writer_cannot_drop_truncate_or_alter_the_tables(
    connect: dict[str, asyncpg.Connection],
) -> None:
    writer = connect["writer"]
    assert await writer.fetchval("SELECT current_user") == "xrides_writer"
    for sql in (
        "DROP TABLE cab_rides",
        "TRUNCATE cab_rides",
        "ALTER TABLE cab_rides ADD COLUMN x int",
        "ALTER TABLE cab_rides DETACH PARTITION cab_rides_" + _this_month().strftime("%Y_%m"),
        "DROP TABLE ride_receipts",
        "TRUNCATE consumer_offsets",
        "DELETE FROM ride_receipts",
        "CREATE TABLE intruder (x int)",
    ):
        await _refused(writer, sql)
    await _refused(writer, "SELECT drop_ride_partition($1)", _this_month())
    # What the persister does: upserts, receipts, offsets, partitions through the owner's function.
    await _allowed(writer, "SELECT ensure_ride_partition($1)", _this_month())
    await _allowed(
        writer,
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('t', 't', 0, 1)",
    )
    await _allowed(writer, "UPDATE ride_versions SET version = version WHERE booking_id = -1")
    await _allowed(writer, "DELETE FROM cab_rides WHERE booking_id = -1")


async def test_the_reader_can_only_select(connect: dict[str, asyncpg.Connection]) -> None:
    reader = connect["reader"]
    assert await reader.fetchval("SELECT count(*) >= 0 FROM cab_rides")
    assert await reader.fetchval("SELECT count(*) >= 0 FROM ride_receipts")
    for sql in (
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('t', 't', 0, 1)",
        "UPDATE cab_rides SET version = version WHERE booking_id = -1",
        "DELETE FROM cab_rides WHERE booking_id = -1",
        "UPDATE ride_versions SET version = version WHERE booking_id = -1",
        "INSERT INTO archive_state (name, at) VALUES ('t', now())",
        "TRUNCATE ride_receipts",
        "DROP TABLE archive_days",
    ):
        await _refused(reader, sql)
    await _refused(reader, "SELECT ensure_ride_partition($1)", _this_month())


async def test_the_archiver_keeps_its_state_and_drops_only_archived_months(
    connect: dict[str, asyncpg.Connection],
) -> None:
    archiver = connect["archiver"]
    partition = "cab_rides_" + _this_month().strftime("%Y_%m")
    assert await archiver.fetchval(f"SELECT count(*) >= 0 FROM {partition}")
    await _allowed(
        archiver,
        "INSERT INTO archive_state (name, at) VALUES ('t', now()) ON CONFLICT (name) DO UPDATE SET at = now()",
    )
    for sql in (
        "DELETE FROM cab_rides WHERE booking_id = -1",
        "UPDATE cab_rides SET version = version WHERE booking_id = -1",
        f"DROP TABLE {partition}",
        "DELETE FROM ride_receipts",
    ):
        await _refused(archiver, sql)
    await _refused(archiver, "SELECT ensure_ride_partition($1)", _this_month())
    # This month is far from archived: the function itself refuses (and the transaction is undone).
    tx = archiver.transaction()
    await tx.start()
    try:
        with pytest.raises(asyncpg.ObjectInUseError, match="not archived"):
            await archiver.execute("SELECT drop_ride_partition($1)", _this_month())
    finally:
        await tx.rollback()


async def test_platform_processes_log_in_with_their_own_roles(stack_env: dict[str, str]) -> None:
    owner = await asyncpg.connect(stack_env["XRIDES_PG_DSN"])
    try:
        users = {r["usename"] for r in await owner.fetch("SELECT usename FROM pg_stat_activity")}
    finally:
        await owner.close()
    assert {"xrides_writer", "xrides_reader"} <= users  # the persister; the API and reconcile


async def test_migrations_rerun_safely_and_only_the_owner_applies_them(stack_env: dict[str, str]) -> None:
    """A fresh database on the same server: the roles exist already (they are per server)."""
    name = f"xrides_roles_{secrets.token_hex(4)}"
    owner_dsn = stack_env["XRIDES_PG_DSN"]
    owner = await asyncpg.connect(owner_dsn)
    await owner.execute(f'CREATE DATABASE "{name}"')
    try:
        fresh = owner_dsn.rsplit("/", 1)[0] + "/" + name
        reader_fresh = stack_env["XRIDES_PG_READER_DSN"].rsplit("/", 1)[0] + "/" + name
        with pytest.raises(SchemaOutdated, match="persister migrate"):
            await migrate(reader_fresh)
        applied = await migrate(fresh)
        assert applied == [version for version, _ in all_migrations()]
        assert "0004_roles" in applied and applied[-1].startswith("apply_staged_rides@")
        assert await migrate(fresh) == []
        writer_fresh = stack_env["XRIDES_PG_WRITER_DSN"].rsplit("/", 1)[0] + "/" + name
        assert await migrate(writer_fresh) == []  # up to date: the writer only makes partitions
        conn = await asyncpg.connect(fresh)
        try:
            owners = await conn.fetch("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        finally:
            await conn.close()
        assert {r["tableowner"] for r in owners} == {await owner.fetchval("SELECT current_user")}
    finally:
        await owner.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await owner.close()
