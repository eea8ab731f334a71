"""Both forms of the query DSL parse to one syntax tree; normalize prints it canonically."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from query_dsl import QueryError, QuerySyntaxError, canonical, parse_document, parse_query
from query_dsl.ast import (
    AbsoluteRange,
    And,
    Compare,
    FieldDim,
    GeoDim,
    InList,
    IsNull,
    Measure,
    Not,
    Or,
    OrderItem,
    Param,
    Query,
    RelativeRange,
    TimeDim,
)
from query_dsl.normalize import canonical_text
from query_dsl.parse_json import query_from
from query_dsl.parse_text import parse_filter

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "docs" / "query-examples").glob("*.json"))

ISSUE_TEXT = (
    "count, cancellation_rate by from_area_id, hour(from_date, 'Asia/Kolkata') "
    "where travel_type_id in (2,3) and from_date >= $from during last 7 days "
    "order by cancellation_rate desc limit 10 having count >= 50"
)
ISSUE_JSON = {
    "measures": ["count", {"fn": "cancellation_rate"}],
    "dimensions": [{"field": "from_area_id"}, {"time": "from_date", "unit": "hour", "zone": "Asia/Kolkata"}],
    "filter": {
        "and": [
            {"field": "travel_type_id", "op": "in", "values": [2, 3]},
            {"field": "from_date", "op": ">=", "value": "$from"},
        ]
    },
    "time_range": "last 7 days",
    "order": [{"by": "cancellation_rate", "desc": True}],
    "limit": 10,
    "having": "count >= 50",
}
EXPECTED = Query(
    measures=(Measure("count"), Measure("cancellation_rate")),
    time_range=RelativeRange("last", 7, "day"),
    dimensions=(FieldDim("from_area_id"), TimeDim("from_date", "hour", "Asia/Kolkata")),
    filter=And((InList("travel_type_id", (2, 3)), Compare("from_date", "gte", Param("from")))),
    having=Compare("count", "gte", 50),
    order=(OrderItem("cancellation_rate", True),),
    limit=10,
)


def test_the_issue_example_parses_to_the_same_tree_in_both_forms() -> None:
    assert parse_query(ISSUE_TEXT) == EXPECTED
    assert query_from(ISSUE_JSON) == (EXPECTED, {})


def test_yaml_is_the_same_document() -> None:
    text = yaml.safe_dump(ISSUE_JSON)
    assert parse_document(text) == (EXPECTED, {})


def test_normalize_round_trips() -> None:
    first = canonical(parse_query(ISSUE_TEXT))
    again = canonical(query_from(json.loads(json.dumps(first)))[0])
    assert first == again
    assert canonical_text(parse_query(ISSUE_TEXT)) == canonical_text(query_from(ISSUE_JSON)[0])


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_documented_example_round_trips(example: Path) -> None:
    query, params = parse_document(example.read_text())
    doc = canonical(query, params or None)
    assert query_from(doc) == (query, params)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("booking_channel:online", Compare("booking_channel", "eq", "online")),
        ("travel_type_id:(2 or 3)", InList("travel_type_id", (2, 3))),
        ("to_area_id:*", IsNull("to_area_id", negated=True)),
        ("not package_id:*", Not(IsNull("package_id", negated=True))),
        ("to_area_id is null", IsNull("to_area_id")),
        ("from_area_id not in (1, 2)", InList("from_area_id", (1, 2), negated=True)),
        ("from_area_id in $areas", InList("from_area_id", Param("areas"))),
        (
            "a = 1 or b = 2 and not c != 3",
            Or((Compare("a", "eq", 1), And((Compare("b", "eq", 2), Not(Compare("c", "ne", 3)))))),
        ),
        (
            "(a = 1 or b = 2) and c >= 1.5",
            And((Or((Compare("a", "eq", 1), Compare("b", "eq", 2))), Compare("c", "gte", 1.5))),
        ),
        (
            "is_weekend = true AND x <> 'it''s'",
            And((Compare("is_weekend", "eq", True), Compare("x", "ne", "it's"))),
        ),
    ],
)
def test_filter_forms(text: str, expected: object) -> None:
    assert parse_filter(text) == expected


def test_filter_objects_match_text() -> None:
    doc = {
        "measures": ["count"],
        "time_range": "last 1 day",
        "filter": {
            "or": [
                {"field": "booking_channel", "op": "eq", "value": "online"},
                {"not": {"field": "to_area_id", "op": "is_null"}},
                {"field": "from_area_id", "op": "not_in", "values": "$areas"},
            ]
        },
    }
    text = "count where booking_channel = 'online' or not to_area_id is null or from_area_id not in $areas during yesterday"
    assert query_from(doc)[0] == parse_query(text)


def test_measures_and_dimensions_shorthands() -> None:
    query = parse_query(
        "p95(lead_time_min), percentile(lead_time_min, 99.9) as p999, count(*), count_distinct(user_id) "
        "by geohash(pickup, 6) as cell, week(from_date), booking_channel during this month zone 'Europe/Berlin' "
        "compare previous period"
    )
    assert query.measures == (
        Measure("percentile", "lead_time_min", 95.0),
        Measure("percentile", "lead_time_min", 99.9, "p999"),
        Measure("count"),
        Measure("count_distinct", "user_id"),
    )
    assert [m.name for m in query.measures] == [
        "p95_lead_time_min",
        "p999",
        "count",
        "count_distinct_user_id",
    ]
    assert query.dimensions == (
        GeoDim("pickup", 6, "cell"),
        TimeDim("from_date", "week"),
        FieldDim("booking_channel"),
    )
    assert query.time_range == RelativeRange("this", 1, "month")
    assert query.zone == "Europe/Berlin"
    assert query.compare == "previous_period"


def test_absolute_ranges() -> None:
    a = parse_query("count during '2026-11-01' .. '2026-11-08T06:00'").time_range
    b = parse_query("count during from '2026-11-01' to '2026-11-08T06:00'").time_range
    assert a == b == AbsoluteRange("2026-11-01", "2026-11-08T06:00")
    assert parse_query("count during $from .. $to").time_range == AbsoluteRange(Param("from"), Param("to"))
    doc = {"measures": ["count"], "time_range": {"from": "$from", "to": "2026-11-08"}}
    assert query_from(doc)[0].time_range == AbsoluteRange(Param("from"), "2026-11-08")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("count by", "expected a dimension"),
        ("count", "needs a time range"),
        ("count during last 7 days limit 5 limit 6", "appears twice"),
        ("count where travel_type_id 2 during last 7 days", "a comparison"),
        ("count during last 7 fortnights", "a unit"),
        ("count during last 7 days ; drop table x", "unexpected character ';'"),
        ("count by foo(bar) during last 1 day", "not a bucket function"),
        ("count during last 0 days", "1..1000"),
        ("count where a = @x during last 1 day", "unexpected character '@'"),
    ],
)
def test_syntax_errors_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message) as info:
        parse_query(text)
    if isinstance(info.value, QuerySyntaxError) and "offset" in info.value.message:
        assert "^" in info.value.message  # a caret under the bad token


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ({"measures": ["count"]}, "$", "missing key 'time_range'"),
        ({"measures": "count", "time_range": "last 1 day"}, "$.measures", "expected a list"),
        ({"measures": ["count"], "time_range": "last 1 day", "limt": 5}, "$", "unknown key 'limt'"),
        (
            {"measures": [{"fn": "avg", "feild": "x"}], "time_range": "last 1 day"},
            "$.measures[0]",
            "unknown key 'feild'",
        ),
        (
            {"measures": [{"fn": 3}], "time_range": "last 1 day"},
            "$.measures[0].fn",
            "expected a measure name",
        ),
        (
            {
                "measures": ["count"],
                "time_range": "last 1 day",
                "filter": {"and": [{"field": "a", "op": "like", "value": 1}]},
            },
            "$.filter.and[0].op",
            "unknown operator 'like'",
        ),
        (
            {
                "measures": ["count"],
                "time_range": "last 1 day",
                "filter": {"field": "a", "op": "eq", "value": [1]},
            },
            "$.filter.value",
            "expected a value",
        ),
        (
            {
                "measures": ["count"],
                "time_range": "last 1 day",
                "dimensions": [{"time": "from_date", "unit": "year"}],
            },
            "$.dimensions[0].unit",
            "unit must be one of",
        ),
        (
            {"measures": ["count"], "time_range": "last 1 day", "dimensions": ["hour(from_date"]},
            "$.dimensions[0]",
            "expected ')'",
        ),
        (
            {"measures": ["count"], "time_range": "last 1 day", "limit": "10"},
            "$.limit",
            "expected an integer",
        ),
        (
            {"measures": ["count"], "time_range": "last 1 day", "compare": "yesterday"},
            "$.compare",
            "previous_period",
        ),
    ],
)
def test_json_errors_name_the_path(doc: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(QueryError, match=re.escape(message)) as info:
        query_from(doc)
    assert info.value.path == path
    assert info.value.message.startswith(path)


DOC = Path(__file__).resolve().parents[2] / "docs" / "query-dsl.md"


def _documented_text_forms() -> dict[str, str]:
    """The ```text block under each worked example's heading in docs/query-dsl.md, by file name."""
    found: dict[str, str] = {}
    for section in DOC.read_text().split("\n### ")[1:]:
        heading = section.splitlines()[0]
        match = re.search(r"`(\d\d_[a-z0-9_]+\.json)`", heading)
        block = re.search(r"```text\n(.*?)```", section, re.S)
        if match and block:
            found[match.group(1)] = block.group(1)
    return found


def test_the_documented_text_forms_are_the_example_files() -> None:
    """Each worked example that shows its text form means exactly its JSON file."""
    texts = _documented_text_forms()
    assert len(texts) >= 10
    for name, text in texts.items():
        query, params = parse_document((EXAMPLES[0].parent / name).read_text())
        assert parse_query(" ".join(text.split())) == query, name
        assert not params
    newer = [p.name for p in EXAMPLES if int(p.name[:2]) >= 13]
    assert set(newer) <= set(texts), "every example of a new shape shows both forms"
