"""What a reconciliation found: one row per UTC pickup day, the differences named, and totals.

Stages and the gaps between them (docs/reconciliation.md has the full story):

- ``acknowledged``: bookings XRides got a 202 for, on ``rides``, by the day of their latest version;
- ``stored``: bookings in ``cab_rides``; ``dead_lettered``: messages in ``ingest_failures``;
- ``pending``: acknowledged, not consumed by the persister yet (its lag);
- ``indexed``: documents in the day's index (days inside the hot window only);
- ``archived``: ``archive_days.rows`` (archived days only).

A gap counts bookings that one stage holds and the next does not, leaving out rides accepted
less than ``settle_s`` ago (they are still on their way), so a gap that lasts is a real one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

# The differences a day can hold, by the gap they belong to.
GAPS: dict[str, tuple[str, ...]] = {
    "acknowledged_stored": ("not_stored", "stored_without_receipt"),
    "stored_indexed": ("missing_from_elasticsearch", "extra_in_elasticsearch"),
    "stored_archived": ("missing_from_archive", "extra_in_archive"),
}
STAGES = ("acknowledged", "stored", "indexed", "archived", "dead_lettered")


@dataclass
class Difference:
    """Bookings on one side only: how many, and the first ``limit`` ids."""

    limit: int
    count: int = 0
    ids: list[int] = field(default_factory=list)

    def add(self, ids: Iterable[int], count: int | None = None) -> None:
        listed = sorted(ids)
        self.count += len(listed) if count is None else count
        self.ids = sorted({*self.ids, *listed})[: self.limit]


@dataclass
class DayRow:
    day: date | None  # None: messages whose pickup day cannot be read
    limit: int
    acknowledged: int = 0
    stored: int = 0
    dead_lettered: int = 0
    pending: int = 0
    indexed: int | None = None  # None: not compared (outside the hot window)
    archived: int | None = None  # None: not archived
    differences: dict[str, Difference] = field(default_factory=dict)

    def diff(self, name: str) -> Difference:
        return self.differences.setdefault(name, Difference(self.limit))

    def gap(self, between: str) -> int:
        return sum(self.differences[n].count for n in GAPS[between] if n in self.differences)

    def stage(self, name: str) -> int:
        value = getattr(self, name)
        return int(value or 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat() if self.day else None,
            "acknowledged": self.acknowledged,
            "stored": self.stored,
            "dead_lettered": self.dead_lettered,
            "pending": self.pending,
            "indexed": self.indexed,
            "archived": self.archived,
            "gaps": {between: self.gap(between) for between in GAPS},
            "differences": {
                name: {"count": d.count, "booking_ids": d.ids}
                for name, d in sorted(self.differences.items())
                if d.count
            },
        }


@dataclass(frozen=True, slots=True)
class PartitionState:
    partition: int
    first_offset: int  # the oldest message Kafka still holds
    end_offset: int
    committed: int  # the persister's next offset (PostgreSQL)
    receipts_expected: int  # offsets in [first_offset, committed)
    receipts_found: int


@dataclass
class Report:
    first: date
    last: date
    reference: datetime
    cutoff_day: date  # days after it are in the hot window (indexed), days before it archived
    settled_before: datetime  # rides accepted later are in flight, never a gap
    rows: dict[date | None, DayRow] = field(default_factory=dict)
    partitions: list[PartitionState] = field(default_factory=list)
    pending_unread: int = 0  # lag past max_tail_messages, day unknown
    expired_unconsumed: int = 0  # messages Kafka deleted before the persister consumed them
    newest: dict[str, datetime | None] = field(default_factory=dict)
    limit: int = 50

    def row(self, day: date | None) -> DayRow:
        if day not in self.rows:
            self.rows[day] = DayRow(day, self.limit)
        return self.rows[day]

    def ordered(self) -> list[DayRow]:
        dated = sorted((r for r in self.rows.values() if r.day is not None), key=lambda r: r.day or date.min)
        unknown = [r for r in self.rows.values() if r.day is None]
        return dated + unknown

    def gaps(self) -> dict[str, int]:
        return {between: sum(r.gap(between) for r in self.rows.values()) for between in GAPS}

    def totals(self) -> dict[str, int]:
        return {stage: sum(r.stage(stage) for r in self.rows.values()) for stage in (*STAGES, "pending")}

    def as_dict(self) -> dict[str, Any]:
        return {
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "reference": self.reference.isoformat(),
            "cutoff_day": self.cutoff_day.isoformat(),
            "settled_before": self.settled_before.isoformat(),
            "days": [r.as_dict() for r in self.ordered()],
            "totals": self.totals(),
            "gaps": self.gaps(),
            "kafka": {
                "partitions": [vars_of(p) for p in self.partitions],
                "pending_unread": self.pending_unread,
                "expired_unconsumed": self.expired_unconsumed,
            },
            "newest": {k: v.isoformat() if v else None for k, v in self.newest.items()},
        }

    def table(self) -> str:
        """The per-day table and the named differences, for a terminal."""
        head: tuple[str, ...] = ("day", "acknowledged", "stored", "dead", "pending", "indexed", "archived")
        head += ("gap ack-stored", "gap stored-indexed", "gap stored-archived")
        lines = [
            f"reconciliation {self.first} .. {self.last} (UTC pickup days); hot window after"
            f" {self.cutoff_day};"
            f" rides accepted after {self.settled_before:%Y-%m-%d %H:%M:%S}Z are in flight",
            "",
        ]
        body: list[tuple[str, ...]] = []
        for r in self.ordered():

            def show(value: int | None) -> str:
                return "-" if value is None else str(value)

            body.append(
                (
                    r.day.isoformat() if r.day else "unknown",
                    str(r.acknowledged),
                    str(r.stored),
                    str(r.dead_lettered),
                    str(r.pending),
                    show(r.indexed),
                    show(r.archived),
                    *(str(r.gap(b)) for b in GAPS),
                )
            )
        totals, gaps = self.totals(), self.gaps()
        body.append(
            (
                "total",
                *(str(totals[s]) for s in ("acknowledged", "stored", "dead_lettered", "pending")),
                str(totals["indexed"]),
                str(totals["archived"]),
                *(str(gaps[b]) for b in GAPS),
            )
        )
        widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
        for row in (head, *body):
            lines.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        differing = [(r, n, d) for r in self.ordered() for n, d in sorted(r.differences.items()) if d.count]
        lines.append("")
        if not differing:
            lines.append("no differences")
        for r, name, d in differing:
            more = f" (+{d.count - len(d.ids)} more)" if d.count > len(d.ids) else ""
            ids = ", ".join(map(str, d.ids)) or "(no booking id)"
            lines.append(f"{r.day.isoformat() if r.day else 'unknown day'} {name}: {d.count}: {ids}{more}")
        lag = sum(max(0, p.end_offset - max(p.committed, p.first_offset)) for p in self.partitions)
        holes = sum(p.receipts_expected - p.receipts_found for p in self.partitions)
        lines.append(
            f"kafka: {len(self.partitions)} partitions, {lag} messages not consumed yet,"
            f" {holes} consumed without a receipt, {self.expired_unconsumed} expired unconsumed"
        )
        fresh = ", ".join(f"{k} {v.isoformat() if v else 'none'}" for k, v in self.newest.items())
        lines.append(f"newest ride: {fresh}")
        return "\n".join(lines)


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}
