"""``verify``: recompute the archive's checksums and rows and compare them with the manifests and,
where PostgreSQL still holds the day, with PostgreSQL row for row.

Nothing is trusted from the archiver's own bookkeeping: every object is downloaded and hashed,
every Parquet file is decoded, and each problem is reported as one line naming the object or day.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from archiver import metrics
from archiver.archive import Archiver, decode_parquet
from xrides.archive.manifest import Manifest, describe_schema
from xrides.archive.schema import archive_schema, canonical, readable
from xrides.archive.store import MANIFEST_NAME, ArchiveStore, sha256_hex


@dataclass(slots=True)
class DayCheck:
    day: date
    rows: int = 0
    objects: int = 0
    compared_with_postgres: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class VerifyReport:
    days: list[DayCheck] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [f"{d.day}: {p}" for d in self.days for p in d.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        return {
            "days": len(self.days),
            "rows": sum(d.rows for d in self.days),
            "objects": sum(d.objects for d in self.days),
            "days_compared_with_postgres": sum(d.compared_with_postgres for d in self.days),
            "problems": self.problems,
            "ok": self.ok,
        }


def diff_tables(archived: pa.Table, pg: pa.Table) -> list[str]:
    """What differs between two canonical tables, by booking id (at most a few examples)."""
    a_ids = set(archived.column("booking_id").to_pylist())
    p_ids = set(pg.column("booking_id").to_pylist())
    out = []
    if p_ids - a_ids:
        out.append(
            f"{len(p_ids - a_ids)} rides in PostgreSQL are missing from the archive, e.g. "
            f"{sorted(p_ids - a_ids)[:5]}"
        )
    if a_ids - p_ids:
        out.append(
            f"{len(a_ids - p_ids)} archived rides are not in PostgreSQL, e.g. {sorted(a_ids - p_ids)[:5]}"
        )
    common = pa.array(sorted(a_ids & p_ids), type=pa.int64())
    a = archived.filter(pc.is_in(archived.column("booking_id"), value_set=common))
    p = pg.filter(pc.is_in(pg.column("booking_id"), value_set=common))
    changed = [f"{name}" for name in archived.column_names if not a.column(name).equals(p.column(name))]
    if changed:
        out.append(f"rides differ from PostgreSQL in columns {changed}")
    return out


async def verify(archiver: Archiver, first: date | None, last: date | None) -> VerifyReport:
    store = archiver.store
    report = VerifyReport()
    days = [
        d
        for d in await asyncio.to_thread(store.days)
        if (first is None or d >= first) and (last is None or d <= last)
    ]
    dropped = {r["month"] for r in await archiver.conn.fetch("SELECT month FROM archive_dropped_months")}
    for day in days:
        check = DayCheck(day)
        report.days.append(check)
        manifest = await _read_manifest(store, day, check)
        if manifest is None:
            continue
        tables = await _read_objects(store, manifest, check)
        if tables is None:
            continue
        archived = (
            canonical(pa.concat_tables(tables)) if tables else canonical(archive_schema().empty_table())
        )
        _check_rows(archived, manifest, check)
        if day.replace(day=1) not in dropped:
            pg = await archiver.read_postgres_day(day)
            check.compared_with_postgres = True
            if not pg.equals(archived):
                check.problems.extend(diff_tables(archived, pg))
    metrics.VERIFY_FAILURES.inc(len(report.problems))
    return report


async def _read_manifest(store: ArchiveStore, day: date, check: DayCheck) -> Manifest | None:
    """The day's manifest, checked against the objects under the day's prefix; None if unreadable."""
    objects = {o.key: o.size for o in await asyncio.to_thread(store.objects, store.day_prefix(day))}
    raw = await asyncio.to_thread(store.get, store.manifest_key(day))
    if raw is None:
        check.problems.append(f"no {MANIFEST_NAME}: {len(objects)} objects not covered by any manifest")
        return None
    try:
        manifest = Manifest.from_json(raw)
    except (ValueError, TypeError, KeyError) as exc:
        check.problems.append(f"unreadable manifest: {exc}")
        return None
    if manifest.day != day:
        check.problems.append(f"manifest names day {manifest.day}")
    current = {c["name"]: c for c in describe_schema(archive_schema())}
    for column in manifest.columns:  # an older manifest lacks the columns added since: readable
        if current.get(column["name"], {}).get("type") != column["type"]:
            check.problems.append(
                f"manifest column {column['name']} ({column['type']}) is not in the archive schema"
            )
    listed = {o.key for o in manifest.objects}
    for extra in sorted(set(objects) - listed - {store.manifest_key(day)}):
        check.problems.append(
            f"{extra}: object not listed in the manifest (readers of the prefix would see it)"
        )
    return manifest


async def _read_objects(store: ArchiveStore, manifest: Manifest, check: DayCheck) -> list[pa.Table] | None:
    """Every listed object, checked for size, checksum, rows and schema; None when one is unusable."""
    tables = []
    for obj in manifest.objects:
        check.objects += 1
        data = await asyncio.to_thread(store.get, obj.key)
        if data is None:
            check.problems.append(f"{obj.key}: missing")
            continue
        if len(data) != obj.bytes:
            check.problems.append(f"{obj.key}: {len(data)} bytes, the manifest says {obj.bytes}")
        if sha256_hex(data) != obj.sha256:
            check.problems.append(f"{obj.key}: sha256 differs from the manifest")
        try:
            table = await asyncio.to_thread(decode_parquet, data)
        except (pa.ArrowException, OSError) as exc:
            check.problems.append(f"{obj.key}: not readable as Parquet: {exc}")
            continue
        if table.num_rows != obj.rows:
            check.problems.append(f"{obj.key}: {table.num_rows} rows, the manifest says {obj.rows}")
        unreadable = readable(table.schema)
        if unreadable:
            check.problems.append(
                f"{obj.key}: schema differs from the archive schema: {'; '.join(unreadable)}"
            )
            continue
        tables.append(table)
    return tables if len(tables) == len(manifest.objects) else None


def _check_rows(archived: pa.Table, manifest: Manifest, check: DayCheck) -> None:
    check.rows = archived.num_rows
    if archived.num_rows != manifest.rows:
        check.problems.append(f"{archived.num_rows} rows, the manifest says {manifest.rows}")
    ids = archived.column("booking_id")
    if archived.num_rows and (
        pc.min(ids).as_py() != manifest.min_booking_id or pc.max(ids).as_py() != manifest.max_booking_id
    ):
        check.problems.append("min/max booking id differ from the manifest")
    if archived.num_rows != len(set(ids.to_pylist())):
        check.problems.append("a booking id appears more than once")
