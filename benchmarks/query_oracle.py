"""The differential oracle: generated queries, run on PostgreSQL, Elasticsearch and the archive over the
same rides, must give the same answer within each column's declared exactness.

    python -m benchmarks.query_oracle --examples 2000 [--rides 40000] [--seed 1] [--keep]

The rides are laid out as the platform lays them out: PostgreSQL holds every ride, Elasticsearch
the hot days (pickups from ``split``), the archive the days before it, in test-only names
(``oracle_test.cab_rides``, ``oracletest-rides-*``, ``s3://xrides-archive/oracletest/rides/``). Each
query's time range lies in one of the two periods, so it runs on PostgreSQL and on the store that
holds that period (and on ``auto``, which must pick one of them and agree); the range's period
alternates, so every engine meets every shape.

Queries come from two sources:

- **a coverage sweep**, deterministic: every catalog field under every operator it allows, alone
  and negated (as filtered measures and as ``where``); every field as a dimension (or histogram),
  every measure on every field it applies to; every time unit and zone; listings paged to the end.
- **generated queries** (Hypothesis): random filters (and/or/not, every operator), measures
  (filtered, arithmetic), dimensions (fields, time buckets in any zone, histograms, geohash cells),
  having, order, limit, top N per group, filled buckets, compare, a choice of time field.

Each outcome is classified: ``same`` (within tolerance), ``refused alike`` (every engine gave the
same 4xx), ``documented`` (a limit one engine has and says so: Elasticsearch's group and scan caps,
a cost check), ``flagged`` (the answer carries a warning that an approximate column moved rows),
or a **divergence** / **5xx**: the test fails on either, the script writes them to
``benchmarks/results/query-oracle.json`` with the query that shows them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st

from loadgen.synthetic import Layout, drop_all, load_all, make_rides
from query_dsl import QueryEngine, QuerySettings, parse_document, plan_query
from query_dsl.catalog import AGGREGATES, FIELDS, POINTS, RATIOS, TIME_FIELDS, ValueType
from query_dsl.errors import QueryLimitExceeded
from query_dsl.result import Result
from xrides.errors import XRidesError
from xrides.ride import Ride
from xrides.ride.enrich import ServiceRegion, enrich
from xrides.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
TABLE = "oracle_test.cab_rides"
PREFIX = "oracletest-rides-"
ARCHIVE = "oracletest/rides"
ZONES = (
    "Asia/Kolkata",
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/Santiago",
    "Pacific/Chatham",
)
HOT_DAYS = 60
DAYS = 100
MAX_LEAD = timedelta(days=15)  # the generator's longest booking-to-pickup lead, with a margin
OPS = {
    ValueType.INTEGER: ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "is_null", "is_not_null"),
    ValueType.NUMBER: ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "is_null", "is_not_null"),
    ValueType.TIMESTAMP: ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "is_null", "is_not_null"),
    ValueType.STRING: ("eq", "ne", "in", "not_in", "is_null", "is_not_null"),
    ValueType.BOOLEAN: ("eq", "ne", "in", "not_in", "is_null", "is_not_null", "bare"),
}
HISTOGRAM_WIDTHS = {ValueType.INTEGER: (1, 7, 50, 1000), ValueType.NUMBER: (0.01, 0.5, 5, 15, 60)}
SPANS = {"minute": timedelta(days=2), "hour": timedelta(days=20), "day": timedelta(days=60)}
ENGINE_LIMIT_CODES = ("query_limit_exceeded",)
Doc = dict[str, Any]


# The data -------------------------------------------------------------------------------------


@dataclass
class OracleData:
    """The rides, where each store's period starts and ends, and values worth filtering on."""

    settings: QuerySettings
    now: datetime
    start: datetime  # the first booking
    split: datetime  # Elasticsearch holds pickups from here, the archive before it (a UTC midnight)
    pools: dict[str, list[Any]] = field(default_factory=dict)

    def region(self, hot: bool) -> tuple[datetime, datetime]:
        """The period a range may cover: [split, now + 14 days) or [start + 1 day, split)."""
        if hot:
            return self.split, self.now + timedelta(days=14)
        return self.start + timedelta(days=1), self.split

    def engine(self, hot: bool) -> str:
        return "elasticsearch" if hot else "archive"


def oracle_settings(base: QuerySettings | None = None, local_zone: str = "America/New_York") -> QuerySettings:
    return dataclasses.replace(
        base or load_settings(QuerySettings),
        query_pg_table=TABLE,
        es_rides_prefix=PREFIX,
        archive_prefix=ARCHIVE,
        hot_days=HOT_DAYS,
        local_zone=local_zone,
        query_freshness=False,
        query_es_request_cache=False,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def value_pools(rides: list[Ride], zone: str, seed: int) -> dict[str, list[Any]]:
    """Up to 12 values per field as the rides hold them (so equality filters find rides), with the
    enriched fields as the Flink job computes them; window fields get small counts."""
    rng = random.Random(seed)
    sample = rng.sample(rides, min(400, len(rides)))
    docs = [enrich(r, ZoneInfo(zone), ServiceRegion()) for r in sample]
    pools: dict[str, list[Any]] = {}
    for name, f in FIELDS.items():
        if f.window_sql:
            pools[name] = [1, 2, 3] if f.type is ValueType.INTEGER else list(f.choices)
            continue
        if f.type is ValueType.BOOLEAN:
            pools[name] = [True, False]
            continue
        if f.choices:
            pools[name] = list(f.choices)
            continue
        raw = [getattr(r, name) if f.raw else d[name] for r, d in zip(sample, docs, strict=True)]
        values = sorted({v for v in raw if v is not None}, key=lambda v: (str(type(v)), v))
        pools[name] = [_plain(v) for v in rng.sample(values, min(12, len(values)))]
    return pools


def load(settings: QuerySettings, rides: int, seed: int) -> OracleData:
    now = datetime.now(UTC).replace(microsecond=0)
    split = datetime.combine((now - timedelta(days=HOT_DAYS - 1)).date(), datetime.min.time(), UTC)
    made = make_rides(rides, now, DAYS, seed=seed, subsecond=0.25)
    layout = Layout(hot_from=split, archive_before=split)
    asyncio.run(load_all(settings, [made], layout))
    data = OracleData(settings, now, now - timedelta(days=DAYS), split)
    data.pools = value_pools(made, settings.local_zone, seed)
    return data


# Query documents ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Picker:
    """How values are chosen: by Hypothesis (generated queries) or a seeded generator (the sweep)."""

    one: Callable[[list[Any]], Any]
    some: Callable[[list[Any]], list[Any]]

    @classmethod
    def drawing(cls, draw: Any) -> Picker:
        return cls(
            lambda seq: draw(st.sampled_from(seq)),
            lambda seq: draw(st.lists(st.sampled_from(seq), min_size=1, max_size=min(4, len(seq)))),
        )

    @classmethod
    def seeded(cls, rng: random.Random) -> Picker:
        return cls(rng.choice, lambda seq: rng.sample(seq, min(3, len(seq))))


def atom(name: str, op: str, pool: list[Any], pick: Picker) -> Doc:
    """One comparison of ``name`` with ``op`` and values from its pool."""
    if op == "bare":
        return {"field": name, "op": "eq", "value": True}
    if op in ("is_null", "is_not_null"):
        return {"field": name, "op": op}
    if op in ("in", "not_in"):
        return {"field": name, "op": op, "values": pick.some(pool)}
    return {"field": name, "op": op, "value": pick.one(pool)}


@st.composite
def filters(draw: Any, data: OracleData, depth: int = 0) -> Doc:
    if depth < 2 and draw(st.integers(0, 3)) == 0:
        kind = draw(st.sampled_from(["and", "or", "not"]))
        if kind == "not":
            return {"not": draw(filters(data, depth + 1))}
        return {kind: draw(st.lists(filters(data, depth + 1), min_size=1, max_size=3))}
    name = draw(st.sampled_from(sorted(FIELDS)))
    op = draw(st.sampled_from(OPS[FIELDS[name].type]))
    return atom(name, op, data.pools[name], Picker.drawing(draw))


def measure_kinds() -> list[tuple[str, str | None]]:
    """Every (aggregate, field) the catalog allows, and the ratios."""
    kinds: list[tuple[str, str | None]] = [("count", None), *((r, None) for r in RATIOS)]
    for fn, spec in AGGREGATES.items():
        if not spec.needs_field:
            continue
        for name, f in FIELDS.items():
            if fn == "percentile" and f.flag:
                continue  # refused: a percentile of a 0/1 flag (its share is avg)
            if (fn == "count_distinct" and f.dimension) or (fn != "count_distinct" and f.measurable):
                kinds.append((fn, name))
    return kinds


MEASURES = measure_kinds()


def measure_doc(fn: str, name: str | None, p: float | None = None) -> Doc:
    doc: Doc = {"fn": fn}
    if name is not None:
        doc["field"] = name
    if fn == "percentile":
        doc["p"] = p if p is not None else 95
    return doc


@st.composite
def measures(draw: Any, data: OracleData) -> list[Doc]:
    out: list[Doc] = []
    for i in range(draw(st.integers(1, 4))):
        fn, name = draw(st.sampled_from(MEASURES))
        doc = measure_doc(fn, name, draw(st.sampled_from([25, 50, 90, 99.9])))
        if draw(st.integers(0, 3)) == 0:
            doc["where"] = draw(filters(data, 1))
        doc["as"] = f"m{i}"
        out.append(doc)
    if len(out) >= 2 and draw(st.booleans()):
        a, b = draw(st.permutations([m["as"] for m in out]))[:2]
        op = draw(st.sampled_from(["+", "-", "*", "/"]))
        number = draw(st.sampled_from(["", " + 1", " * 2.5", " - 0.5"]))
        out.append({"calc": f"({a} {op} {b}){number}", "as": "calc0"})
    return out


def dimension_kinds() -> list[Doc]:
    kinds: list[Doc] = []
    for name, f in FIELDS.items():
        if f.dimension:
            kinds.append({"field": name})
        if f.numeric:
            kinds.extend({"histogram": name, "width": w} for w in HISTOGRAM_WIDTHS[f.type])
    for point in POINTS:
        kinds.extend({"geohash": point, "precision": p} for p in (1, 3, 5))
    return kinds


DIMENSIONS = dimension_kinds()


@st.composite
def dimensions(draw: Any, span: timedelta) -> list[Doc]:
    out: list[Doc] = []
    for i in range(draw(st.integers(0, 3))):
        if draw(st.integers(0, 2)) == 0:
            units = [u for u in ("minute", "hour", "day", "week", "month") if span <= SPANS.get(u, span)]
            doc: Doc = {"time": draw(st.sampled_from(TIME_FIELDS)), "unit": draw(st.sampled_from(units))}
            if draw(st.booleans()):
                doc["zone"] = draw(st.sampled_from(ZONES))
        else:
            doc = dict(draw(st.sampled_from(DIMENSIONS)))
        doc["as"] = f"d{i}"
        out.append(doc)
    return out


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@st.composite
def time_ranges(draw: Any, data: OracleData, hot: bool, time_field: str, compare: bool) -> Any:
    """A range inside the period of one store (and its previous period too, with ``compare``)."""
    low, high = data.region(hot)
    if time_field == "booking_created" and not hot:
        high -= MAX_LEAD  # rides booked before the split but picked up after it are not archived
    if time_field == "to_date" and hot:
        low += timedelta(days=1)  # dropped off after the split, picked up before it
    if time_field == "from_date" and hot and draw(st.booleans()):
        return draw(st.sampled_from(sorted(RELATIVE_SPANS)))
    length = draw(
        st.sampled_from(
            [
                timedelta(hours=1),
                timedelta(hours=7),
                timedelta(days=1),
                timedelta(days=3),
                timedelta(days=8),
                timedelta(days=19),
            ]
        )
    )
    room = (high - low) - length * (2 if compare else 1)
    if room <= timedelta(0):
        length = timedelta(hours=5)
        room = (high - low) - length * 2
    offset = timedelta(seconds=draw(st.integers(0, int(room.total_seconds()))))
    start = low + (length if compare else timedelta(0)) + offset
    start = start.replace(second=0, microsecond=0)
    return {"from": _iso(start), "to": _iso(start + length)}


RELATIVE_SPANS = {
    "today": timedelta(days=1),
    "yesterday": timedelta(days=1),
    "this week": timedelta(days=7),
    "last week": timedelta(days=7),
    "last 7 days": timedelta(days=7),
    "last 28 days": timedelta(days=28),
    "last 36 hours": timedelta(hours=36),
}


def span_of(time_range: Any) -> timedelta:
    if isinstance(time_range, dict):
        return datetime.fromisoformat(time_range["to"]) - datetime.fromisoformat(time_range["from"])
    return RELATIVE_SPANS[time_range]


@st.composite
def aggregations(draw: Any, data: OracleData, hot: bool) -> Doc:
    time_field = draw(st.sampled_from(["from_date", "from_date", "booking_created", "to_date"]))
    compare = draw(st.integers(0, 5)) == 0
    time_range = draw(time_ranges(data, hot, time_field, compare))
    doc: Doc = {
        "measures": draw(measures(data)),
        "time_range": time_range,
        "zone": draw(st.sampled_from(ZONES)),
    }
    if time_field != "from_date":
        doc["time_field"] = time_field
    dims = draw(dimensions(span_of(time_range)))
    if compare:
        dims = [d for d in dims if "time" not in d]
        doc["compare"] = "previous_period"
    if dims:
        doc["dimensions"] = dims
    if draw(st.booleans()):
        doc["filter"] = draw(filters(data))
    names = [d["as"] for d in dims] + [m["as"] for m in doc["measures"]]
    measure_names = [m["as"] for m in doc["measures"]]
    if draw(st.integers(0, 3)) == 0:
        column = draw(st.sampled_from(measure_names))
        doc["having"] = {
            "field": column,
            "op": draw(st.sampled_from(["gt", "gte", "lt", "lte"])),
            "value": draw(st.sampled_from([0, 1, 2, 5, 0.05, 10, 30.5])),
        }
    if draw(st.booleans()):
        doc["order"] = [{"by": c, "desc": draw(st.booleans())} for c in draw(st.permutations(names))[:2]]
    if draw(st.booleans()):
        doc["limit"] = draw(st.integers(1, 30))
        if len(dims) >= 2 and draw(st.booleans()):
            doc["per"] = [dims[0]["as"]]
    times = [d for d in dims if "time" in d]
    if len(times) == 1 and draw(st.integers(0, 2)) == 0:
        doc["fill"] = "zero"
    return doc


@st.composite
def listings(draw: Any, data: OracleData, hot: bool) -> Doc:
    time_range = draw(time_ranges(data, hot, "from_date", False))
    select = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=6, unique=True))
    doc: Doc = {
        "select": select,
        "time_range": time_range,
        "zone": draw(st.sampled_from(ZONES)),
        "limit": draw(st.integers(1, 40)),
    }
    if draw(st.booleans()):
        doc["filter"] = draw(filters(data))
    orderable = sorted(n for n, f in FIELDS.items() if not f.nullable)
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(orderable), min_size=1, max_size=2, unique=True))
        doc["order"] = [{"by": k, "desc": draw(st.booleans())} for k in keys]
    return doc


@st.composite
def queries(draw: Any, data: OracleData) -> tuple[Doc, bool]:
    hot = draw(st.booleans())
    if draw(st.integers(0, 5)) == 0:
        return draw(listings(data, hot)), hot
    return draw(aggregations(data, hot)), hot


# The coverage sweep -----------------------------------------------------------------------------


def sweep(data: OracleData) -> list[tuple[Doc, bool]]:
    """Deterministic documents covering every field x operator (and its negation), every field as a
    dimension, every measure on every field, every time unit and zone; each in both periods."""
    rng = random.Random(3)
    pick = Picker.seeded(rng)
    docs: list[Doc] = []
    for name, f in FIELDS.items():
        counts: list[Doc] = []
        for op in OPS[f.type]:
            test = atom(name, op, data.pools[name], pick)
            counts.append({"fn": "count", "where": test, "as": f"c_{op}"})
            counts.append({"fn": "count", "where": {"not": test}, "as": f"not_{op}"})
        docs.append({"measures": counts[:20], "time_range": "last 28 days"})
        if len(counts) > 20:
            docs.append({"measures": counts[20:], "time_range": "last 28 days"})
        op = OPS[f.type][rng.randrange(len(OPS[f.type]))]
        where = atom(name, op, data.pools[name], pick)
        docs.append(
            {"measures": ["count", "cancellation_rate"], "filter": where, "time_range": "last 14 days"}
        )
        if f.dimension:
            docs.append(
                {
                    "measures": ["count", "online_share"],
                    "dimensions": [name],
                    "time_range": "last 14 days",
                    "order": ["-count"],
                    "limit": 25,
                }
            )
        if f.numeric:
            width = HISTOGRAM_WIDTHS[f.type][rng.randrange(len(HISTOGRAM_WIDTHS[f.type]))]
            docs.append(
                {
                    "measures": ["count"],
                    "dimensions": [{"histogram": name, "width": width}],
                    "time_range": "last 7 days",
                }
            )
        applicable = [m for m in MEASURES if m[1] == name]
        if applicable:
            docs.append(
                {
                    "measures": [measure_doc(fn, n, 90) for fn, n in applicable],
                    "dimensions": ["travel_type_id"],
                    "time_range": "last 28 days",
                }
            )
    for zone in ZONES:
        for unit in ("hour", "day", "week"):
            docs.append(
                {
                    "measures": ["count", "sum(car_cancellation)"],
                    "dimensions": [{"time": "from_date", "unit": unit, "zone": zone}],
                    "time_range": "last 14 days",
                    "zone": zone,
                }
            )
    docs.append({"measures": ["count"], "dimensions": ["minute(from_date)"], "time_range": "last 36 hours"})
    docs.append(
        {"measures": ["count"], "dimensions": ["month(booking_created)"], "time_range": "last 28 days"}
    )
    docs.append(
        {
            "measures": ["count"],
            "dimensions": [{"geohash": "dropoff", "precision": 4}, "travel_type_id"],
            "time_range": "last 7 days",
            "order": ["-count"],
            "limit": 10,
        }
    )
    docs.extend(_clock_changes(data))
    docs.append(
        {
            "select": sorted(FIELDS),
            "time_range": "last 2 days",
            "limit": 50,
            "order": [{"by": "lead_time_min", "desc": True}],
        }
    )
    out: list[tuple[Doc, bool]] = []
    for doc in docs:
        if "_region" in doc:  # already in the period that holds it
            region = doc.pop("_region")
            out.append((doc, region))
            continue
        out.append((doc, True))
        out.append((_shift_to_archive(doc, data), False))
    return out


def transitions(zone: str, low: datetime, high: datetime) -> list[datetime]:
    """The instants in [low, high) where ``zone``'s UTC offset changes (found hour by hour)."""
    tz = ZoneInfo(zone)
    found = []
    moment = low.replace(minute=0, second=0, microsecond=0)
    offset = moment.astimezone(tz).utcoffset()
    while moment < high:
        moment += timedelta(hours=1)
        now_offset = moment.astimezone(tz).utcoffset()
        if now_offset != offset:
            found.append(moment)
            offset = now_offset
    return found


def _clock_changes(data: OracleData) -> list[Doc]:
    """Minute, hour and day buckets across every clock change of every zone inside the data, in the
    period that holds it (the repeated autumn hour is two buckets, a skipped midnight starts the day
    when the clock jumps)."""
    docs: list[Doc] = []
    for hot in (True, False):
        low, high = data.region(hot)
        for zone in ZONES:
            for change in transitions(zone, low + timedelta(days=1), high - timedelta(days=1)):
                window = {
                    "from": _iso(change - timedelta(hours=20)),
                    "to": _iso(change + timedelta(hours=20)),
                }
                for unit in ("minute", "hour", "day"):
                    docs.append({
                        "measures": ["count", "sum(lead_time_min)"],
                        "dimensions": [{"time": "from_date", "unit": unit, "zone": zone}],
                        "time_range": window, "zone": zone,
                        "_region": hot,
                    })  # fmt: skip
    return docs


def _shift_to_archive(doc: Doc, data: OracleData) -> Doc:
    """The same document with a relative range replaced by as long a range in the archived period."""
    low, high = data.region(False)
    days = {"last 28 days": 28, "last 14 days": 14, "last 7 days": 7, "last 2 days": 2, "last 36 hours": 1.5}
    span = timedelta(days=days[doc["time_range"]])
    end = high - timedelta(days=2)
    return {**doc, "time_range": {"from": _iso(max(low, end - span)), "to": _iso(end)}}


# Running and comparing --------------------------------------------------------------------------


@dataclass
class Verdict:
    kind: str  # same | refused_alike | documented | flagged | divergence | error_5xx
    engine: str
    detail: str = ""
    doc: Doc | None = None


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if a is None or b is None or isinstance(a, str | bool) or isinstance(b, str | bool):
        return bool(a == b)
    if isinstance(a, int) and isinstance(b, int) and tolerance == 0:
        return a == b
    return math.isclose(a, b, rel_tol=max(tolerance, 1e-9), abs_tol=1e-9)


def first_difference(reference: Result, other: Result) -> str:
    """Where two results differ beyond the columns' tolerance ('' when they agree)."""
    names = [c.name for c in reference.columns]
    if [c.name for c in other.columns] != names or [c.type for c in other.columns] != [
        c.type for c in reference.columns
    ]:
        shown = [[(c.name, c.type) for c in r.columns] for r in (other, reference)]
        return f"columns {shown[0]} != {shown[1]}"
    if len(other.rows) != len(reference.rows):
        return f"{len(other.rows)} rows != {len(reference.rows)}: {other.rows[:3]} vs {reference.rows[:3]}"
    tolerances = [
        max(a.tolerance, b.tolerance) for a, b in zip(reference.columns, other.columns, strict=True)
    ]
    for i, (want, got) in enumerate(zip(reference.rows, other.rows, strict=True)):
        for name, tol, a, b in zip(names, tolerances, want, got, strict=True):
            if not _close(a, b, tol):
                return f"row {i} column {name}: {b!r} != {a!r} (tolerance {tol})"
    if other.next_cursor != reference.next_cursor:
        return "next_cursor differs"
    return ""


def _refusal(error: BaseException) -> str | None:
    """The error code of a 4xx, or None for anything else (a 5xx)."""
    if isinstance(error, XRidesError) and error.http_status < 500:
        return error.code
    return None


def _judge_errors(engine: str, reference: Result | BaseException, other: Result | BaseException) -> Verdict:
    for x in (reference, other):
        if isinstance(x, BaseException) and _refusal(x) is None:
            return Verdict("error_5xx", engine, f"{type(x).__name__}: {str(x)[:300]}")
    if isinstance(reference, BaseException) and isinstance(other, BaseException):
        codes = (_refusal(reference), _refusal(other))
        if codes[0] == codes[1]:
            return Verdict("refused_alike", engine, str(codes[0]))
        return Verdict("divergence", engine, f"refused differently: {codes}")
    refused = other if isinstance(other, BaseException) else reference
    assert isinstance(refused, BaseException)
    # A limit only that engine has, which it names (Elasticsearch's group and scan caps, cost checks).
    documented = isinstance(refused, QueryLimitExceeded) and (
        refused.details.get("backend") == engine or "groups on elasticsearch" in refused.message
    )
    if documented:
        return Verdict("documented", engine, str(refused)[:200])
    return Verdict("divergence", engine, f"only one refused: {str(refused)[:300]}")


def judge(engine: str, reference: Result | BaseException, other: Result | BaseException) -> Verdict:
    if isinstance(reference, BaseException) or isinstance(other, BaseException):
        return _judge_errors(engine, reference, other)
    difference = first_difference(reference, other)
    if not difference:
        return Verdict("same", engine)
    if any("approximate columns" in w for w in other.warnings):
        return Verdict("flagged", engine, difference)
    return Verdict("divergence", engine, difference)


class Oracle:
    def __init__(self, data: OracleData) -> None:
        self.data = data
        self.engine = QueryEngine(data.settings)
        self.loop = asyncio.new_event_loop()
        self.verdicts: list[Verdict] = []
        self.coverage: Counter[str] = Counter()

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.close())
        self.loop.close()

    async def _run(self, doc: Doc, backend: str) -> Result | BaseException:
        try:
            query, params = parse_document(json.dumps(doc))
            plan = plan_query(query, params, self.data.now, self.data.settings.limits)
            return await self.engine.run(plan, backend, self.data.now)
        except Exception as exc:  # every outcome is judged, a crash included
            return exc

    def check(self, doc: Doc, hot: bool) -> list[Verdict]:
        """Run on PostgreSQL, the period's store and auto; pages of a listing are followed."""
        engine = self.data.engine(hot)
        verdicts = []
        for _ in range(3 if "select" in doc else 1):
            reference = self.loop.run_until_complete(self._run(doc, "postgres"))
            other = self.loop.run_until_complete(self._run(doc, engine))
            verdict = judge(engine, reference, other)
            verdict.doc = doc
            verdicts.append(verdict)
            if isinstance(reference, Result) and verdict.kind == "same" and "select" not in doc:
                auto = self.loop.run_until_complete(self._run(doc, "auto"))
                chosen = judge("auto", reference, auto)
                chosen.doc = doc
                verdicts.append(chosen)
            if not isinstance(reference, Result) or reference.next_cursor is None:
                break
            doc = {**doc, "cursor": reference.next_cursor}
        self._count(doc, engine)
        self.verdicts.extend(verdicts)
        return verdicts

    def _count(self, doc: Doc, engine: str) -> None:
        self.coverage[f"engine:{engine}"] += 1
        text = json.dumps(doc)
        for name, f in FIELDS.items():
            for op in OPS[f.type]:
                if f'"field": "{name}", "op": "{op}"' in text:
                    self.coverage[f"op:{name}:{op}"] += 1
        for key in ("having", "order", "limit", "per", "fill", "compare", "time_field", "select", "cursor"):
            if f'"{key}"' in text:
                self.coverage[f"shape:{key}"] += 1

    def bad(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.kind in ("divergence", "error_5xx")]

    def summary(self) -> dict[str, Any]:
        kinds = Counter(f"{v.engine}:{v.kind}" for v in self.verdicts)
        return {
            "queries": sum(v for k, v in self.coverage.items() if k.startswith("engine:")),
            "verdicts": dict(sorted(kinds.items())),
            "divergences": [
                {"engine": v.engine, "kind": v.kind, "detail": v.detail, "query": v.doc} for v in self.bad()
            ],
            "flagged": [
                {"engine": v.engine, "detail": v.detail, "query": v.doc}
                for v in self.verdicts
                if v.kind == "flagged"
            ][:20],
            "coverage": dict(sorted(self.coverage.items())),
        }


def run_generated(oracle: Oracle, examples: int, seed: int | None) -> None:
    """``examples`` generated queries through Hypothesis (outcomes recorded, never raised)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(queries(oracle.data))
    def one(query: tuple[Doc, bool]) -> None:
        oracle.check(*query)

    if seed is not None:
        one = fixed_seed(seed)(one)
    one()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=500, help="generated queries (after the sweep)")
    parser.add_argument("--rides", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: derandomized)")
    parser.add_argument("--local-zone", default="America/New_York", help="the zone of hour_of_day etc.")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the test data afterwards")
    parser.add_argument("--out", default="query-oracle.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    settings = oracle_settings(local_zone=args.local_zone)
    started = time.perf_counter()
    data = load(settings, args.rides, seed=11)
    loaded = time.perf_counter() - started
    oracle = Oracle(data)
    try:
        if not args.no_sweep:
            for doc, hot in sweep(data):
                oracle.check(doc, hot)
        run_generated(oracle, args.examples, args.seed)
    finally:
        oracle.close()
        if not args.keep:
            asyncio.run(drop_all(settings))
    report = {
        "rides": args.rides,
        "local_zone": args.local_zone,
        "examples": args.examples,
        "seed": args.seed,
        "now": data.now.isoformat(),
        "split": data.split.isoformat(),
        "load_s": round(loaded, 1),
        "run_s": round(time.perf_counter() - started - loaded, 1),
        **oracle.summary(),
    }
    path = REPO / "benchmarks" / "results" / args.out
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps({k: report[k] for k in ("queries", "verdicts", "load_s", "run_s")}, indent=2))
    print(f"{len(report['divergences'])} divergences or 5xx; written to {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
