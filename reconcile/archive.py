"""The archive side: ``archive_days`` gives the rows per day; the Parquet objects name them.

Counts come from PostgreSQL's mirror of the manifests (``archive_days``), so a normal run never
touches S3. Only a day whose count differs from ``cab_rides`` is read, through its manifest and
only its ``booking_id`` column, to name the bookings that differ.
"""

from __future__ import annotations

import asyncio
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq

from reconcile.settings import ReconcileSettings
from xrides.archive.manifest import Manifest
from xrides.archive.store import ArchiveStore, StoreConfig


def archive_store(settings: ReconcileSettings) -> ArchiveStore:
    s = settings
    return ArchiveStore(
        StoreConfig(
            s.s3_endpoint, s.s3_access_key, s.s3_secret_key, s.s3_bucket, s.archive_prefix, s.s3_region
        )
    )


def _archived_ids(store: ArchiveStore, day: date) -> set[int]:
    raw = store.get(store.manifest_key(day))
    if raw is None:
        return set()
    ids: set[int] = set()
    for obj in Manifest.from_json(raw).objects:
        data = store.get(obj.key)
        if data is None:
            continue  # `archiver verify` reports a listed object that is gone
        table = pq.read_table(pa.BufferReader(data), columns=["booking_id"])
        ids.update(table.column("booking_id").to_pylist())
    return ids


async def archived_ids(store: ArchiveStore, day: date) -> set[int]:
    return await asyncio.to_thread(_archived_ids, store, day)
