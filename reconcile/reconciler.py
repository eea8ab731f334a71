"""One reconciliation pass over a range of UTC pickup days.

Where "acknowledged" comes from. Reading the whole ``rides`` topic every run would be the direct
answer, but it costs a full scan of seven days of messages (two million at XRides' volume) and
still says nothing about older days. Instead it is derived from what the persister already keeps,
and only the part PostgreSQL cannot know is read from Kafka:

- every consumed message has a receipt (``ride_receipts``), written in the same transaction as the
  ride and the consumer's offset; ``ride_versions`` holds each booking's current version with the
  Kafka position of its message, so "bookings of day D whose version's message has a receipt" is
  one indexed query;
- the receipts are checked against Kafka itself: per partition, every offset between the oldest
  message Kafka holds and the persister's committed offset must have a receipt (offsets of
  ``rides`` are contiguous: its producers are not transactional). An offset without one is a
  message the persister skipped; it is read from the topic and named;
- the lag (committed offset to end of partition) is read from the topic to learn each message's
  day; it is ``pending`` and becomes a gap only once it is older than ``settle_s``;
- dead letters (``ingest_failures``) are acknowledged but never stored; their day is read from the
  payload they keep.

Then per day: ``stored`` from ``cab_rides``, ``indexed`` from the day's index (days inside the
hot window), ``archived`` from ``archive_days``. Counts are compared first; only a day whose
counts differ is listed id by id, and a booking whose newest version anywhere was accepted after
``settled_before`` is left out as in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import asyncpg
from elasticsearch import AsyncElasticsearch

from reconcile import postgres as pg
from reconcile.archive import archive_store, archived_ids
from reconcile.report import PartitionState, Report
from reconcile.search import RideIndex
from reconcile.settings import ReconcileSettings
from reconcile.topic import Described, TopicMessage, TopicReader, describe
from xrides.archive.store import ArchiveStore
from xrides.search.client import connect

log = logging.getLogger("reconcile")


def days_between(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _month(day: date) -> date:
    return day.replace(day=1)


@dataclass(frozen=True, slots=True)
class _Unconsumed:
    message: TopicMessage
    hole: bool  # below the committed offset without a receipt (not just lag)


def _latest_per_booking(messages: list[_Unconsumed]) -> tuple[dict[int, _Unconsumed], list[_Unconsumed]]:
    """Each booking's latest unconsumed message, and those whose booking cannot be read."""
    latest: dict[int, _Unconsumed] = {}
    anonymous: list[_Unconsumed] = []
    for item in messages:
        ride = item.message.ride
        if ride.booking_id is None:
            anonymous.append(item)
            continue
        held = latest.get(ride.booking_id)
        if held is None or (ride.version or 0, item.message.offset) > (
            held.message.ride.version or 0,
            held.message.offset,
        ):
            latest[ride.booking_id] = item
    return latest, anonymous


def _count_unconsumed(
    report: Report,
    latest: dict[int, _Unconsumed],
    current: dict[int, tuple[int, date]],
    in_range: set[date],
    settle_version: int,
) -> None:
    """Acknowledged rides PostgreSQL does not hold yet: pending (in flight) or not stored."""
    for booking, item in latest.items():
        ride = item.message.ride
        held_version = current.get(booking)
        if held_version is not None and ride.version is not None and held_version[0] >= ride.version:
            continue  # a newer (or the same) version is stored: nothing outstanding
        if held_version is not None and held_version[1] in in_range:
            report.row(held_version[1]).acknowledged -= 1  # the booking moves to this message's day
        if ride.day is not None and ride.day not in in_range:
            continue
        row = report.row(ride.day)
        row.acknowledged += 1
        row.pending += 0 if item.hole else 1
        in_flight = not item.hole and ride.version is not None and ride.version >= settle_version
        if not in_flight:
            row.diff("not_stored").add([booking])


def _count_anonymous(
    report: Report, anonymous: list[_Unconsumed], snapshot: _Snapshot, messages: list[_Unconsumed]
) -> None:
    """Messages without a readable booking, and what could not be read at all, on the unknown day."""
    for item in anonymous:
        row = report.row(None)
        row.acknowledged += 1
        row.pending += 0 if item.hole else 1
        if item.hole:
            row.diff("not_stored").add([], count=1)
    unknown = report.row(None)
    unknown.acknowledged += report.pending_unread + report.expired_unconsumed
    unknown.pending += report.pending_unread
    unread_holes = sum(snapshot.hole_counts.values()) - sum(1 for m in messages if m.hole)
    if unread_holes + report.expired_unconsumed:
        unknown.diff("not_stored").add([], count=unread_holes + report.expired_unconsumed)


def _count_dead_letters(
    report: Report,
    dead: list[tuple[pg.DeadLetter, Described]],
    current: dict[int, tuple[int, date]],
    latest: dict[int, _Unconsumed],
    in_range: set[date],
) -> None:
    """Each dead-lettered booking once, on its day; acknowledged-and-never-stored ones count there."""
    counted: set[int | tuple[int, int]] = set()
    for letter, ride in dead:
        if ride.day is not None and ride.day not in in_range:
            continue
        key: int | tuple[int, int] = (
            ride.booking_id if ride.booking_id is not None else (letter.partition, letter.offset)
        )
        if key in counted:
            continue
        counted.add(key)
        row = report.row(ride.day)
        row.dead_lettered += 1
        if ride.booking_id is None or (ride.booking_id not in current and ride.booking_id not in latest):
            row.acknowledged += 1  # acknowledged, never stored: accounted for by the dead letter


class Reconciler:
    """``async with Reconciler(settings) as r: report = await r.run(first, last)``."""

    def __init__(self, settings: ReconcileSettings) -> None:
        self.settings = settings
        self._conn: asyncpg.Connection | None = None
        self._es: AsyncElasticsearch | None = None
        self._store: ArchiveStore | None = None

    async def __aenter__(self) -> Reconciler:
        self._conn = await asyncpg.connect(self.settings.pg_dsn, timeout=10, command_timeout=600)
        self._es = connect(self.settings.es_url, request_timeout=60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()
        if self._es is not None:
            await self._es.close()

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None, "use Reconciler as an async context manager"
        return self._conn

    @property
    def index(self) -> RideIndex:
        assert self._es is not None, "use Reconciler as an async context manager"
        return RideIndex(self._es, self.settings.es_rides_prefix)

    @property
    def store(self) -> ArchiveStore:
        if self._store is None:
            self._store = archive_store(self.settings)
        return self._store

    async def run(self, first: date, last: date) -> Report:
        s = self.settings
        now = datetime.now(UTC)
        settled_before = now - timedelta(seconds=s.settle_s)
        settle_version = int(settled_before.timestamp() * 1_000_000)
        report = Report(first, last, s.reference(), s.cutoff_day(), settled_before, limit=s.max_ids)
        in_range = set(days_between(first, last))
        snapshot, messages = await self._snapshot_and_unconsumed(report, first, last)
        # Unconsumed and skipped messages, and dead letters: the booking's latest word wins.
        latest, anonymous = _latest_per_booking(messages)
        dead = [(letter, describe(letter.payload, letter.booking_id)) for letter in snapshot.dead]
        dead_ids = [d.booking_id for _, d in dead if d.booking_id is not None]
        current = await pg.current_versions(self.conn, [*latest, *dead_ids])
        _count_unconsumed(report, latest, current, in_range, settle_version)
        _count_anonymous(report, anonymous, snapshot, messages)
        _count_dead_letters(report, dead, current, latest, in_range)
        unknown = report.row(None)
        if not unknown.acknowledged and not unknown.dead_lettered and not unknown.differences:
            del report.rows[None]

        await self._compare_index(report, sorted(in_range), snapshot.stored, settle_version, latest)
        await self._compare_archive(report, snapshot)
        report.newest["elasticsearch"] = await self.index.newest_received_at()
        return report

    async def _snapshot_and_unconsumed(
        self, report: Report, first: date, last: date
    ) -> tuple[_Snapshot, list[_Unconsumed]]:
        """PostgreSQL's snapshot, and the messages it has not consumed: the lag past its committed
        offsets, and the holes below them (offsets without a receipt)."""
        s = self.settings
        reader = await asyncio.to_thread(TopicReader, s.kafka_bootstrap, s.rides_topic)
        try:
            marks = await asyncio.to_thread(reader.watermarks)
            snapshot = await self._snapshot(report, first, last, marks)
            tail = {p: (max(c, marks[p][0]), marks[p][1]) for p, c in snapshot.committed.items()}
            messages = [
                _Unconsumed(m, False) for m in await asyncio.to_thread(reader.read, tail, s.max_tail_messages)
            ]
            lag = sum(max(0, stop - start) for start, stop in tail.values())
            report.pending_unread = lag - len(messages)
            for p, offsets in snapshot.holes.items():
                for start, stop in _runs(offsets):
                    found = await asyncio.to_thread(reader.read, {p: (start, stop)}, stop - start)
                    messages += [_Unconsumed(m, True) for m in found]
        finally:
            await asyncio.to_thread(reader.close)
        return snapshot, messages

    async def _snapshot(
        self, report: Report, first: date, last: date, marks: dict[int, tuple[int, int]]
    ) -> _Snapshot:
        """Everything PostgreSQL says, from one consistent snapshot."""
        s = self.settings
        conn = self.conn
        snap = _Snapshot()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snap.stored = await pg.stored_per_day(conn, first, last)
            versions = await pg.versions_per_day(conn, first, last)
            committed = await pg.committed_offsets(conn, s.persister_group_id, s.rides_topic)
            for p, (low, end) in sorted(marks.items()):
                done = committed.get(p, low)
                snap.committed[p] = done
                consumed = min(done, end)
                if done < low:
                    report.expired_unconsumed += low - done
                expected = max(0, consumed - low)
                found = await pg.receipts_between(conn, p, low, consumed) if expected else 0
                report.partitions.append(PartitionState(p, low, end, done, expected, found))
                if found < expected:
                    snap.hole_counts[p] = expected - found
                    snap.holes[p] = await pg.offsets_without_receipt(
                        conn, p, low, consumed, s.max_tail_messages
                    )
            snap.dead = await pg.dead_letters(conn, s.rides_topic, s.max_dead_letters)
            snap.archived = await pg.archived_days(conn, first, last)
            snap.dropped = await pg.dropped_months(conn)
            for day in sorted(set(snap.stored) | set(versions)):
                row = report.row(day)
                row.stored = snap.stored.get(day, 0)
                counts = versions.get(day, pg.VersionCounts(0, 0))
                row.acknowledged += counts.with_receipt
                if _month(day) in snap.dropped:
                    continue  # retention dropped the month's rows on purpose: the archive holds them
                if counts.versions != row.stored:
                    lost = await pg.lost_rows(conn, day, s.max_ids)
                    row.diff("not_stored").add(lost.ids, lost.count)
                    extra = await pg.rows_without_version(conn, day, s.max_ids)
                    row.diff("stored_without_receipt").add(extra.ids, extra.count)
                if counts.with_receipt != counts.versions:
                    missing = await pg.versions_without_receipt(conn, day, s.max_ids)
                    row.diff("stored_without_receipt").add(missing.ids, missing.count)
            report.newest["postgres"] = await pg.newest_stored_at(conn)
        return snap

    async def _compare_index(
        self,
        report: Report,
        days: list[date],
        stored: dict[date, int],
        settle_version: int,
        unconsumed: dict[int, _Unconsumed],
    ) -> None:
        """Days inside the hot window: the day's index against cab_rides."""
        counts = await self.index.counts()
        for day in days:
            if day <= report.cutoff_day:
                continue
            in_pg, in_es = stored.get(day, 0), counts.get(day, 0)
            if not in_pg and not in_es:
                continue
            row = report.row(day)
            row.indexed = in_es
            if in_pg == in_es:
                continue
            settled_pg = await pg.stored_settled_count(self.conn, day, settle_version)
            if settled_pg == await self.index.settled_count(day, settle_version):
                continue  # the difference is rides still on their way
            pg_ids = await pg.stored_ids(self.conn, day, settle_version)
            es_ids = await self.index.ids(day, settle_version)
            candidates = sorted(set(pg_ids) ^ set(es_ids))
            newest = {b: v for b, (v, _) in (await pg.current_versions(self.conn, candidates)).items()}
            for booking, version in (await self.index.versions(candidates)).items():
                newest[booking] = max(newest.get(booking, 0), version)
            for booking in candidates:
                waiting = unconsumed[booking].message.ride.version if booking in unconsumed else None
                if waiting:
                    newest[booking] = max(newest.get(booking, 0), waiting)
            settled = {b for b in candidates if newest.get(b, 0) < settle_version}
            row.diff("missing_from_elasticsearch").add(sorted(settled & (set(pg_ids) - set(es_ids))))
            row.diff("extra_in_elasticsearch").add(sorted(settled & (set(es_ids) - set(pg_ids))))

    async def _compare_archive(self, report: Report, snap: _Snapshot) -> None:
        """Archived days: archive_days.rows against cab_rides, named from the Parquet when they differ."""
        for day, rows in sorted(snap.archived.items()):
            row = report.row(day)
            row.archived = rows
            if _month(day) in snap.dropped or rows == snap.stored.get(day, 0):
                continue
            in_pg = set(await pg.stored_ids(self.conn, day))
            in_archive = await archived_ids(self.store, day)
            row.diff("missing_from_archive").add(sorted(in_pg - in_archive))
            row.diff("extra_in_archive").add(sorted(in_archive - in_pg))


class _Snapshot:
    def __init__(self) -> None:
        self.stored: dict[date, int] = {}
        self.committed: dict[int, int] = {}
        self.holes: dict[int, list[int]] = {}
        self.hole_counts: dict[int, int] = {}
        self.dead: list[pg.DeadLetter] = []
        self.archived: dict[date, int] = {}
        self.dropped: set[date] = set()


def _runs(offsets: list[int]) -> Iterator[tuple[int, int]]:
    """Contiguous ``[start, stop)`` runs of sorted offsets."""
    start = prev = None
    for offset in offsets:
        if start is None:
            start = prev = offset
        elif offset == (prev or 0) + 1:
            prev = offset
        else:
            yield start, (prev or 0) + 1
            start = prev = offset
    if start is not None:
        yield start, (prev or 0) + 1
