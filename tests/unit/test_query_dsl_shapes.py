"""The questions analysts ask, without a network: parsing both forms, planning, and the SQL of every new
shape run in DuckDB over generated rides against the same answer computed in Python; Elasticsearch's
answers parsed from recorded responses (including the empty period that used to fail with a 500).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest

from loadgen.synthetic import make_rides
from query_dsl import (
    QueryError,
    QueryLimitExceeded,
    UnknownName,
    canonical,
    parse_document,
    parse_query,
    plan_query,
)
from query_dsl.archive import DuckRunner
from query_dsl.ast import BinOp, Calc, Compare, HistogramDim, Measure, Ref
from query_dsl.backends import QueryEngine
from query_dsl.compile_duckdb import DuckDbCompiler, compile_duckdb
from query_dsl.compile_es import (
    CARDINALITY_PAGE_BYTES,
    GROUPED_CARDINALITY_PRECISION,
    composite_page_size,
    metric_aggs,
)
from query_dsl.cost import estimate_groups, pg_total_cost
from query_dsl.errors import QueryBackendUnavailable
from query_dsl.freshness import Freshness
from query_dsl.guards import Limits
from query_dsl.listing import decode_cursor, encode_cursor
from query_dsl.parse_json import query_from
from query_dsl.plan import Plan
from query_dsl.result import (
    add_calcs,
    apply_tail,
    composite_page,
    es_rows,
    fill_rows,
    listing_rows,
    sql_rows,
    time_buckets,
)
from query_dsl.settings import QuerySettings
from query_dsl.timerange import ResolvedRange
from xrides.ride import RIDE_FIELDS, Ride, parquet_schema
from xrides.ride.enrich import ServiceRegion, enrich

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ZONE = ZoneInfo("Asia/Kolkata")


@pytest.fixture(scope="module")
def rides() -> list[Ride]:
    return make_rides(4000, NOW, 20, seed=21, subsecond=0.2)


@pytest.fixture(scope="module")
def docs(rides: list[Ride]) -> list[dict[str, Any]]:
    return [enrich(r, ZONE, ServiceRegion()) for r in rides]


def _plan(text: str, params: dict[str, Any] | None = None) -> Plan:
    if text.lstrip().startswith("{"):
        query, inline = parse_document(text)
        return plan_query(query, {**inline, **(params or {})}, NOW)
    return plan_query(parse_query(text), params or {}, NOW)


def _duck(plan: Plan, rides: list[Ride], zone: str = "Asia/Kolkata") -> list[Any]:
    table = pa.Table.from_pydict({f.name: [getattr(r, f.name) for r in rides] for f in RIDE_FIELDS},
                                 schema=parquet_schema())  # fmt: skip
    compiled = compile_duckdb(plan, 10_000, plan.range, True, zone)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("rides", table)
    records = con.execute(compiled.sql, list(compiled.params)).fetchall()
    if plan.listing:
        return listing_rows(plan, records)[0]
    rows = sql_rows(plan, compiled.labels, records)
    return [[row[c.name] for c in plan.columns] for row in rows]


def _in_range(plan: Plan, rides: list[Ride], docs: list[dict[str, Any]]) -> list[tuple[Ride, dict[str, Any]]]:
    return [
        (r, d) for r, d in zip(rides, docs, strict=True) if plan.range.start <= r.from_date < plan.range.end
    ]


# Parsing ----------------------------------------------------------------------------------------


def test_the_new_shapes_mean_the_same_in_both_forms() -> None:
    text = (
        "count, count filter (where is_cancelled) as cancelled, cancelled / count as share "
        "by day(from_date), histogram(lead_time_min, 15) where is_weekend "
        "during last 7 days on booking_created order by cancelled desc limit 3 per day_from_date fill zero"
    )
    doc = {
        "measures": [
            "count",
            {"fn": "count", "where": "is_cancelled", "as": "cancelled"},
            {"calc": "cancelled / count", "as": "share"},
        ],
        "dimensions": ["day(from_date)", {"histogram": "lead_time_min", "width": 15}],
        "filter": {"field": "is_weekend", "op": "eq", "value": True},
        "time_range": "last 7 days",
        "time_field": "booking_created",
        "order": ["cancelled desc"],
        "limit": 3,
        "per": ["day_from_date"],
        "fill": "zero",
    }
    parsed = parse_query(text)
    assert query_from(doc)[0] == parsed
    assert parsed.measures[1] == Measure(
        "count", alias="cancelled", where=Compare("is_cancelled", "eq", True)
    )
    assert parsed.measures[2] == Calc(BinOp("/", Ref("cancelled"), Ref("count")), "share")
    assert parsed.dimensions[1] == HistogramDim("lead_time_min", 15.0)
    assert query_from(canonical(parsed))[0] == parsed  # normalize round-trips the new keys


def test_listings_parse_in_both_forms() -> None:
    text = "select booking_id, from_date where not is_cancelled during last 2 days order by from_date desc limit 5"
    doc = {"select": ["booking_id", "from_date"], "filter": "not is_cancelled", "time_range": "last 2 days",
           "order": ["-from_date"], "limit": 5}  # fmt: skip
    assert query_from(doc)[0] == parse_query(text)
    with pytest.raises(QueryError, match="not both"):
        query_from({**doc, "measures": ["count"]})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("count, missing / count as r during last 7 days", "not a measure listed before it"),
        ("count, count + 1 during last 7 days", "needs a name"),
        ("count, sum(distance_km) / count as r during last 7 days", "arithmetic takes measure columns"),
        ("count by travel_type_id, from_area_id during last 7 days limit 3 per nope", "unknown column"),
        ("count by travel_type_id, from_area_id during last 7 days per travel_type_id", "expected"),
        ("count by travel_type_id during last 7 days fill zero", "exactly one time bucket"),
        ("count by histogram(booking_channel, 2) during last 7 days", "needs a number field"),
        ("count by histogram(lead_time_min, 0) during last 7 days", "positive"),
        ("count where travel_type_id during last 7 days", "travel_type_id expects an integer"),
        ("p90(car_cancellation) during last 7 days", "0/1 flag car_cancellation says nothing"),
        ("count during last 7 days on travel_type_id", "time_field must be one of"),
        ("select booking_id by travel_type_id during last 7 days", "no dimensions"),
        ("select to_area_id during last 7 days order by to_area_id", "can be null"),
    ],
)
def test_mistakes_in_the_new_shapes_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        _plan(text)


def test_per_needs_a_limit() -> None:
    doc = {"measures": ["count"], "dimensions": ["travel_type_id", "from_area_id"], "time_range": "last 7 days",
           "per": ["travel_type_id"]}  # fmt: skip
    with pytest.raises(QueryError, match="'per' needs a limit"):
        _plan(str(doc).replace("'", '"'))


# DuckDB against Python ------------------------------------------------------------------------------


def test_filtered_measures_and_ratios(rides: list[Ride], docs: list[dict[str, Any]]) -> None:
    plan = _plan(
        "count, count filter (where is_cancelled) as cancelled, cancelled / count as share, "
        "avg(lead_time_min) filter (where booking_channel = 'online') as online_lead "
        "by travel_type_id during last 14 days"
    )
    got = _duck(plan, rides)
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for _, doc in _in_range(plan, rides, docs):
        groups[doc["travel_type_id"]].append(doc)
    expected = []
    for kind in sorted(groups):
        group = groups[kind]
        cancelled = sum(d["is_cancelled"] for d in group)
        online = [d["lead_time_min"] for d in group if d["booking_channel"] == "online"]
        expected.append([kind, len(group), cancelled, cancelled / len(group), sum(online) / len(online)])
    assert len(got) == len(expected) == 3
    for row, want in zip(got, expected, strict=True):
        assert row[:4] == want[:4]
        assert row[4] == pytest.approx(want[4], rel=1e-12)


def test_top_n_per_group(rides: list[Ride], docs: list[dict[str, Any]]) -> None:
    plan = _plan(
        "count by day(from_date), from_area_id during last 7 days order by count desc limit 3 per day_from_date"
    )
    got = _duck(plan, rides)
    counts: Counter[tuple[str, int]] = Counter()
    for ride, doc in _in_range(plan, rides, docs):
        day = ride.from_date.astimezone(ZONE).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
        counts[(day, doc["from_area_id"])] += 1
    expected = []
    for day in sorted({d for d, _ in counts}):
        ranked = sorted(((-n, area) for (d, area), n in counts.items() if d == day))[:3]
        expected += [[day, area, -n] for n, area in ranked]
    assert got == expected
    assert len({row[0] for row in got}) == 7


def test_histograms_put_missing_values_in_the_null_bucket(
    rides: list[Ride], docs: list[dict[str, Any]]
) -> None:
    plan = _plan("count by histogram(distance_km, 2.5) during last 14 days")
    got = {row[0]: row[1] for row in _duck(plan, rides)}
    expected: Counter[float | None] = Counter()
    for _, doc in _in_range(plan, rides, docs):
        value = doc["distance_km"]
        expected[None if value is None else (value // 2.5) * 2.5] += 1
    assert got == dict(expected)
    assert got[None] > 0  # rentals have no drop-off


def test_customer_fields_count_within_the_range(rides: list[Ride], docs: list[dict[str, Any]]) -> None:
    plan = _plan("count, count_distinct(user_id) by customer_type during last 10 days")
    got = _duck(plan, rides)
    in_range = sorted(_in_range(plan, rides, docs), key=lambda rd: (rd[0].from_date, rd[0].booking_id))
    seen: set[int] = set()
    new = 0
    for ride, _ in in_range:
        new += ride.user_id not in seen
        seen.add(ride.user_id)
    assert got[0] == ["new", new, new]
    assert got[1][0] == "returning"
    assert got[1][1] == len(in_range) - new


def test_a_listing_pages_to_the_end_with_its_cursor(rides: list[Ride], docs: list[dict[str, Any]]) -> None:
    text = (
        "select booking_id, lead_time_min, is_weekend during last 2 days order by lead_time_min desc limit 40"
    )
    query = parse_query(text)
    plan = plan_query(query, {}, NOW)
    seen: list[list[Any]] = []
    for _ in range(100):
        compiled = compile_duckdb(plan, 10_000, plan.range, True)
        table = pa.Table.from_pydict({f.name: [getattr(r, f.name) for r in rides] for f in RIDE_FIELDS},
                                     schema=parquet_schema())  # fmt: skip
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("rides", table)
        page, last = listing_rows(plan, con.execute(compiled.sql, list(compiled.params)).fetchall())
        seen += [[row["booking_id"], row["lead_time_min"]] for row in page]
        if last is None:
            break
        cursor = encode_cursor(query, {}, plan.range, last)
        # later pages keep the first page's range, even though "now" moved on
        plan = plan_query(replace(query, cursor=cursor), {}, NOW + timedelta(hours=5))
    expected = sorted(
        ([d["booking_id"], d["lead_time_min"]] for r, d in _in_range(plan, rides, docs)),
        key=lambda x: (-x[1], x[0]),
    )
    assert seen == expected
    assert len(seen) > 40  # more than one page


def test_a_cursor_of_another_query_is_refused() -> None:
    query = parse_query("select booking_id during last 2 days limit 5")
    plan = plan_query(query, {}, NOW)
    cursor = encode_cursor(query, {}, plan.range, (plan.range.start, 7))
    other = parse_query("select booking_id where is_weekend during last 2 days limit 5")
    with pytest.raises(QueryError, match="not one this query returned"):
        plan_query(replace(other, cursor=cursor), {}, NOW)
    with pytest.raises(QueryError, match="cursor"):
        plan_query(replace(query, cursor=cursor[:-3] + "xyz"), {}, NOW)
    pinned, after = decode_cursor(replace(query, cursor=cursor), {}, plan.order)  # type: ignore[arg-type]
    assert (pinned.start, pinned.end) == (plan.range.start, plan.range.end)  # the range does not slide
    assert after == (plan.range.start, 7)


def test_hour_buckets_keep_the_repeated_autumn_hour_apart() -> None:
    """Europe/Berlin, 25 October 2026: 02:00-03:00 happens twice (CEST, then CET)."""
    rides = make_rides(200, datetime(2026, 10, 25, 1, 0, tzinfo=UTC), 2 / 24, seed=2)
    plan = _plan(
        "count by hour(from_date, 'Europe/Berlin') during '2026-10-25T00:00Z' .. '2026-10-25T02:00Z'"
    )
    buckets = [row[0] for row in _duck(plan, rides)]
    assert "2026-10-25T02:00:00+02:00" in buckets
    assert "2026-10-25T02:00:00+01:00" in buckets
    assert buckets == sorted(buckets, key=datetime.fromisoformat)


def test_the_service_zone_is_the_configured_one(rides: list[Ride]) -> None:
    plan = _plan("count by hour_of_day, is_weekend during last 14 days")
    berlin = ZoneInfo("Europe/Berlin")
    expected: Counter[tuple[int, bool]] = Counter()
    for ride in rides:
        if plan.range.start <= ride.from_date < plan.range.end:
            doc = enrich(ride, berlin, ServiceRegion())
            expected[(doc["hour_of_day"], doc["is_weekend"])] += 1
    got = {(row[0], row[1]): row[2] for row in _duck(plan, rides, zone="Europe/Berlin")}
    assert got == dict(expected)
    assert got != {(row[0], row[1]): row[2] for row in _duck(plan, rides)}  # Kolkata's differ
    with pytest.raises(QueryError):
        DuckDbCompiler(plan, "rides", 10, zone="Europe/Berlin'; DROP TABLE x; --")


def test_booleans_filter_in_every_form_in_duckdb(rides: list[Ride], docs: list[dict[str, Any]]) -> None:
    """The issue's first failure: is_cancelled: true / is_weekend: false were syntax errors."""
    forms: dict[str, Callable[[dict[str, Any]], bool]] = {
        "is_cancelled: true": lambda d: d["is_cancelled"],
        "is_cancelled": lambda d: d["is_cancelled"],
        "is_weekend: false": lambda d: not d["is_weekend"],
        "is_weekend in (false)": lambda d: not d["is_weekend"],
        "is_cancelled not in (true) and hour_of_day in (1, 2, 3)": lambda d: (
            not d["is_cancelled"] and d["hour_of_day"] in (1, 2, 3)
        ),
    }
    for text, test in forms.items():
        plan = _plan(f"count where {text} during last 14 days")
        expected = sum(1 for _, d in _in_range(plan, rides, docs) if test(d))
        assert _duck(plan, rides) == [[expected]], text


# Elasticsearch answers and the shared steps ----------------------------------------------------------


def test_an_empty_period_on_elasticsearch_is_no_rows_not_a_500() -> None:
    """The issue's second failure: example 06 when last week has no indices."""
    plan = _plan("count, cancellation_rate, p50(lead_time_min), count_distinct(user_id) during last 7 days")
    empty = {"hits": {"total": {"value": 0}}, "timed_out": False}  # no index matched: no aggregations
    assert es_rows(plan, empty, Limits()) == [
        {"count": 0, "cancellation_rate": None, "p50_lead_time_min": None, "count_distinct_user_id": 0}
    ]
    grouped = _plan("count, cancellation_rate by travel_type_id during this week compare previous period")
    assert composite_page(grouped, empty, Limits()) == ([], None)
    assert es_rows(_plan("count by geohash(pickup, 5) during last 7 days"), empty, Limits()) == []


def test_composite_pages_read_keys_and_filtered_measures() -> None:
    plan = _plan(
        "count, count filter (where is_cancelled) as c, c / count as share by travel_type_id during last 7 days"
    )
    response = {
        "hits": {"total": {"value": 9}},
        "aggregations": {"groups": {"after_key": {"d0": 2}, "buckets": [
            {"key": {"d0": 1}, "doc_count": 4, "m1": {"doc_count": 1}},
            {"key": {"d0": 2}, "doc_count": 5, "m1": {"doc_count": 0}},
        ]}},
    }  # fmt: skip
    rows, after = composite_page(plan, response, Limits())
    rows = add_calcs(plan, rows)  # after the last page
    assert after == {"d0": 2}
    assert [[r["travel_type_id"], r["count"], r["c"], r["share"]] for r in rows] == [
        [1, 4, 1, 0.25],
        [2, 5, 0, 0.0],
    ]


def test_filling_gives_every_bucket_of_the_range() -> None:
    plan = _plan(
        "count, avg(lead_time_min) by day(from_date) during '2026-10-20' .. '2026-10-27' zone 'Europe/Berlin'"
    )
    rows = [{"day_from_date": "2026-10-22T00:00:00+02:00", "count": 3, "avg_lead_time_min": 4.0}]
    filled = fill_rows(plan, rows, 1000)
    assert [r["day_from_date"] for r in filled] == [
        "2026-10-20T00:00:00+02:00", "2026-10-21T00:00:00+02:00", "2026-10-22T00:00:00+02:00",
        "2026-10-23T00:00:00+02:00", "2026-10-24T00:00:00+02:00", "2026-10-25T00:00:00+02:00",
        "2026-10-26T00:00:00+01:00",
    ]  # fmt: skip
    assert [r["count"] for r in filled] == [0, 0, 3, 0, 0, 0, 0]
    assert filled[0]["avg_lead_time_min"] is None  # a mean of nothing is null, a count is 0


def test_hour_buckets_of_a_clock_change_day() -> None:
    plan = _plan("count by hour(from_date) during '2026-10-25' .. '2026-10-26' zone 'Europe/Berlin'")
    day = plan.time_dimension
    assert day is not None
    assert len(time_buckets(day, plan.range, 1000)) == 25  # the autumn day has 25 hours
    spring = _plan("count by day(from_date) during '2026-09-05' .. '2026-09-08' zone 'America/Santiago'")
    starts = time_buckets(spring.dimensions[0], spring.range, 100)
    assert starts[1] == "2026-09-06T01:00:00-03:00"  # midnight was skipped: the day starts at 01:00


def test_having_order_and_per_in_python_match_sql_rules() -> None:
    plan = _plan(
        "count by travel_type_id, from_area_id during last 7 days having count >= 2 order by count desc limit 1 per travel_type_id"
    )
    rows = [
        {"travel_type_id": 1, "from_area_id": 5, "count": 2},
        {"travel_type_id": 1, "from_area_id": 3, "count": 2},
        {"travel_type_id": 2, "from_area_id": 9, "count": 1},
        {"travel_type_id": 2, "from_area_id": 8, "count": 7},
    ]
    assert apply_tail(plan, rows) == [rows[1], rows[3]]  # ties broken by the other dimension


def test_cost_estimates() -> None:
    assert pg_total_cost([{"Plan": {"Total Cost": 1234.5}}]) == 1234.5
    plan = _plan("count by hour(from_date), travel_type_id, user_id during last 2 days")
    answer = {"hits": {"total": {"value": 50_000}}, "aggregations": {"card_user_id": {"value": 30_000}}}
    assert estimate_groups(plan, plan.range, answer) == 50_000  # never more groups than rides
    small = {"hits": {"total": {"value": 10**9}}, "aggregations": {"card_user_id": {"value": 10}}}
    assert estimate_groups(plan, plan.range, small) == 49 * 3 * 10


def test_freshness_warns_about_lag_and_dead_letters() -> None:
    fresh = Freshness("postgres", NOW, newest_ride=NOW, lag_rides=12, dead_letters=3)
    recent = ResolvedRange(NOW - timedelta(days=1), NOW, "UTC", "x")
    old = ResolvedRange(NOW - timedelta(days=30), NOW - timedelta(days=20), "UTC", "x")
    assert any("12 acknowledged rides" in w for w in fresh.warnings(recent, NOW))
    assert not any("acknowledged rides have not" in w for w in fresh.warnings(old, NOW))
    assert any("3 acknowledged rides were dead-lettered" in w for w in fresh.warnings(old, NOW))
    archive = Freshness("archive", NOW, newest_day=(NOW - timedelta(days=61)).date())
    assert any("the archive holds days up to" in w for w in archive.warnings(recent, NOW))
    assert Freshness("postgres", NOW).warnings(recent, NOW) == []
    assert archive.as_dict()["newest_day"] == "2026-09-20"


def test_the_explain_of_a_scan_shows_both_steps() -> None:
    engine = QueryEngine(QuerySettings(query_freshness=False))
    try:
        plan = _plan("count by customer_type during last 7 days")
        explained = engine.explain(plan, "elasticsearch", NOW)
        statement = explained["statements"][0]
        assert statement["mode"] == "scan"
        assert "row_number() OVER" in statement["then"]["sql"]
        assert any("within the query's range" in w for w in explained["warnings"])
        composite = engine.explain(_plan("count by user_id during last 7 days"), "elasticsearch", NOW)
        assert composite["statements"][0]["mode"] == "composite"
    finally:
        asyncio.run(engine.close())


def test_unknown_names_in_expressions_are_unknown_names() -> None:
    with pytest.raises(UnknownName):
        _plan("count, nope * 2 as x during last 7 days")


def test_duckdb_runs_within_its_memory_limit() -> None:
    """Each archive (and scan) query gets DuckDB's memory_limit; past it the query is a 400, not a crash."""
    table = pa.table({"x": list(range(10))})
    configured = DuckRunner(QuerySettings(query_duckdb_memory_mb=256, query_duckdb_threads=1))
    settings = configured.run(
        table, "SELECT current_setting('memory_limit'), current_setting('threads')", [], 30
    )
    assert settings == [("244.1 MiB", 1)]  # 256 MB, as DuckDB spells it
    starved = DuckRunner(QuerySettings(query_duckdb_memory_mb=1, query_duckdb_threads=1))
    with pytest.raises(QueryLimitExceeded, match="more than DuckDB's 1 MB"):
        starved.run(table, "SELECT count(DISTINCT a.i) FROM range(3000000) a(i)", [], 30)


def test_a_partial_elasticsearch_answer_is_refused_not_returned() -> None:
    """Shards that failed (a circuit breaker) leave their groups out of a 200: the engine refuses it."""
    plan = _plan('{"measures": ["count"], "dimensions": ["user_id"], "time_range": "last 7 days"}')
    failed = {
        "timed_out": False,
        "_shards": {"total": 26, "successful": 2, "failed": 24,
                    "failures": [{"reason": {"type": "circuit_breaking_exception"}}]},
        "aggregations": {"groups": {"buckets": [{"key": {"d0": 7}, "doc_count": 3}], "after_key": {"d0": 7}}},
    }  # fmt: skip
    with pytest.raises(QueryBackendUnavailable, match=r"2 of 26 shards \(circuit_breaking_exception\)"):
        composite_page(plan, failed, Limits())
    whole = {**failed, "_shards": {"total": 26, "successful": 26, "failed": 0}}
    assert composite_page(plan, whole, Limits())[0] == [{"user_id": 7, "count": 3}]


def test_pages_of_distinct_counts_fit_the_circuit_breaker() -> None:
    grouped = _plan(
        '{"measures": ["count_distinct(driver_id)"], "dimensions": ["user_id"], "time_range": "last 7 days"}'
    )
    plain = _plan('{"measures": ["count"], "dimensions": ["user_id"], "time_range": "last 7 days"}')
    size = composite_page_size(grouped, 10_000)
    assert (
        size * GROUPED_CARDINALITY_PRECISION * 8
        <= CARDINALITY_PAGE_BYTES
        < (size + 1) * GROUPED_CARDINALITY_PRECISION * 8
    )
    assert composite_page_size(plain, 10_000) == 10_000
    aggs = metric_aggs(grouped)
    assert aggs["m0"]["cardinality"]["precision_threshold"] == GROUPED_CARDINALITY_PRECISION
