"""Archiver benchmark: rows archived per second, and Parquet size per million rides versus JSON.

    python benchmarks/archiver_bench.py --rides 1000000 --days 150

Uses the running local stack (`make up`) but touches nothing of the platform's: a fresh database
``xrides_archbench`` (migrated like production), its own index prefix and archive prefix. Rides
come from :mod:`loadgen.rides` (XRides' mix, Bangalore areas) with pickups spread over ``--days``
days before a fixed reference time, and are stored through the persister's own writer. Then one
archiver run is timed (read from PostgreSQL, encode, upload, read back and verify, manifest), and
the archived rows are also serialised as NDJSON and gzipped NDJSON (what other tools archive) to
compare sizes. Results go to ``benchmarks/results/archiver-latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from archiver.archive import Archiver, cutoff_day
from archiver.settings import ArchiverSettings
from archiver.verify import verify
from loadgen.synthetic import iter_rides
from persister.writer import Message, RideWriter
from xrides.archive.store import ArchiveStore
from xrides.db.migrate import migrate
from xrides.ride import RideEnvelope

REPO = Path(__file__).resolve().parents[1]
REFERENCE = datetime(2026, 6, 1, tzinfo=UTC)
DB = "xrides_archbench"


def settings_from_env() -> ArchiverSettings:
    base = os.environ.get("XRIDES_PG_DSN", "postgresql://xrides:xrides@127.0.0.1:15432/xrides")
    return ArchiverSettings(
        pg_dsn=base.rsplit("/", 1)[0] + "/" + DB,
        es_url=os.environ.get("XRIDES_ES_URL", "http://127.0.0.1:19200"),
        es_rides_prefix="archbench-rides-",
        s3_endpoint=os.environ.get("XRIDES_S3_ENDPOINT", "http://127.0.0.1:19000"),
        s3_access_key=os.environ.get("XRIDES_S3_ACCESS_KEY", "xrides"),
        s3_secret_key=os.environ.get("XRIDES_S3_SECRET_KEY", "xrides-secret"),
        s3_bucket=os.environ.get("XRIDES_S3_BUCKET", "xrides-archive"),
        archive_prefix="bench/archiver/rides",
        reference_time=REFERENCE.isoformat(),
    )


async def prepare(settings: ArchiverSettings, rides: int, days: int) -> float:
    admin = await asyncpg.connect(
        os.environ.get("XRIDES_PG_DSN", settings.pg_dsn.rsplit("/", 1)[0] + "/xrides")
    )
    await admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{DB}"')
    await admin.close()
    await migrate(settings.pg_dsn)
    store = ArchiveStore(settings.store_config())
    for obj in store.objects(store.prefix + "/"):
        store.delete(obj.key)
    writer = RideWriter(settings.pg_dsn, "archbench")
    started = time.perf_counter()
    offset = 0
    try:
        for chunk in iter_rides(rides, REFERENCE, days, seed=3, chunk=20_000):
            messages = []
            for ride in chunk:
                offset += 1
                envelope = RideEnvelope(ride, 1_700_000_000_000_000 + offset, "api")
                messages.append(Message("rides", 0, offset, envelope.key(), b"", envelope))
            await writer.write("rides", messages, {0: offset + 1})
    finally:
        await writer.close()
    return time.perf_counter() - started


async def measure(settings: ArchiverSettings) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.pg_dsn)
    old_rows = await conn.fetchval(
        "SELECT count(*) FROM cab_rides WHERE from_date < $1",
        datetime.combine(cutoff_day(settings), datetime.min.time(), UTC),
    )
    await conn.close()
    async with Archiver(settings) as archiver:
        started = time.perf_counter()
        cpu = time.process_time()
        report = await archiver.run()
        seconds = time.perf_counter() - started
        cpu_s = time.process_time() - cpu
        verify_started = time.perf_counter()
        checked = await verify(archiver, None, None)
        verify_s = time.perf_counter() - verify_started
        # The same rows as JSON: one sample of days, scaled (the whole set need not sit in memory).
        json_bytes = gz_bytes = parquet_bytes = sample_rows = 0
        for outcome in report.days[:: max(1, len(report.days) // 10)]:
            manifest = await archiver.read_manifest(outcome.day)
            assert manifest is not None
            table = await archiver.read_archived_day(manifest)
            ndjson = b"".join(
                orjson.dumps(row, option=orjson.OPT_NAIVE_UTC) + b"\n" for row in table.to_pylist()
            )
            json_bytes += len(ndjson)
            gz_bytes += len(gzip.compress(ndjson, 6))
            parquet_bytes += manifest.total_bytes
            sample_rows += table.num_rows
    per_million = 1_000_000 / max(sample_rows, 1)
    return {
        "rows_archived": report.rows,
        "rows_past_window": old_rows,
        "days_archived": len(report.days),
        "run_seconds": round(seconds, 2),
        "rows_per_second": round(report.rows / seconds),
        "process_cpu_seconds": round(cpu_s, 2),
        "verify_seconds": round(verify_s, 2),
        "verify_ok": checked.ok,
        "parquet_bytes_total": report.bytes,
        "parquet_mb_per_million_rides": round(parquet_bytes * per_million / 1e6, 1),
        "ndjson_mb_per_million_rides": round(json_bytes * per_million / 1e6, 1),
        "ndjson_gzip_mb_per_million_rides": round(gz_bytes * per_million / 1e6, 1),
        "parquet_vs_ndjson": round(json_bytes / max(parquet_bytes, 1), 1),
        "parquet_vs_ndjson_gzip": round(gz_bytes / max(parquet_bytes, 1), 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rides", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=150, help="pickups spread over this many days")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    args = parser.parse_args()
    settings = settings_from_env()
    load_s = asyncio.run(prepare(settings, args.rides, args.days))
    print(f"loaded {args.rides:,} rides through the persister's writer in {load_s:.1f} s")
    result = asyncio.run(measure(settings))
    result |= {
        "rides_loaded": args.rides,
        "days": args.days,
        "load_seconds": round(load_s, 1),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, whole local stack running",
    }
    for key, value in result.items():
        print(f"{key:34} {value}")
    out = REPO / "benchmarks" / "results" / "archiver-latest.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"written to {out.relative_to(REPO)}")
    if not args.keep:
        store = ArchiveStore(settings.store_config())
        for obj in store.objects(store.prefix + "/"):
            store.delete(obj.key)


if __name__ == "__main__":
    main()
