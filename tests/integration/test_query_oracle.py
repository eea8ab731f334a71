"""The differential oracle's bounded slice (benchmarks/query_oracle.py has the long run).

Rides laid out as the platform lays them out (every ride in PostgreSQL, the hot days in
Elasticsearch, the days before them in the archive), in test-only names, deleted afterwards. Two
parts: the coverage sweep (every catalog field under every operator it allows, alone and negated,
as a dimension and as a measure, every time unit in every zone, every clock change in the data,
a listing paged to its end; each in both periods) and generated queries (Hypothesis, derandomized
so CI sees the same ones). Every query runs on PostgreSQL, on the engine that holds its period and
on ``auto``; the test fails on any difference beyond the columns' declared exactness that the
answer does not flag, and on any 5xx.

The zone of hour_of_day / day_of_week / is_weekend is America/New_York here (the platform's default is
Asia/Kolkata): configurable, with a clock change inside the data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from benchmarks.query_oracle import OPS, Oracle, load, oracle_settings, run_generated, sweep
from loadgen.synthetic import drop_all
from query_dsl import QuerySettings
from query_dsl.catalog import FIELDS
from xrides.settings import load_settings

pytestmark = pytest.mark.integration

RIDES = 16_000
GENERATED = 120


@pytest.fixture(scope="module")
def oracle(stack_env: dict[str, str]) -> Iterator[Oracle]:
    settings = oracle_settings(load_settings(QuerySettings, stack_env), local_zone="America/New_York")
    data = load(settings, RIDES, seed=11)
    checker = Oracle(data)
    try:
        yield checker
    finally:
        checker.close()
        asyncio.run(drop_all(settings))


def _report(oracle: Oracle) -> str:
    bad = oracle.bad()
    return "\n".join(f"{v.engine} {v.kind}: {v.detail}\n  {json.dumps(v.doc)[:800]}" for v in bad[:10])


def test_every_field_and_operator_agrees_on_every_engine(oracle: Oracle) -> None:
    for doc, hot in sweep(oracle.data):
        oracle.check(doc, hot)
    assert not oracle.bad(), _report(oracle)
    kinds = {(v.engine, v.kind) for v in oracle.verdicts}
    assert {("elasticsearch", "same"), ("archive", "same"), ("auto", "same")} <= kinds
    for name, field in FIELDS.items():
        for op in OPS[field.type]:
            if op != "bare":
                assert oracle.coverage[f"op:{name}:{op}"] >= 2, f"{name} {op} was not run in both periods"
    assert oracle.coverage["shape:cursor"] >= 2  # the listing was paged in both periods


def test_generated_queries_agree_on_every_engine(oracle: Oracle) -> None:
    before = len(oracle.verdicts)
    run_generated(oracle, GENERATED, seed=None)
    assert len(oracle.verdicts) - before >= GENERATED
    assert not oracle.bad(), _report(oracle)
    summary = oracle.summary()
    answered = sum(n for key, n in summary["verdicts"].items() if key.endswith((":same", ":flagged")))
    assert answered > GENERATED  # most generated queries are answered, not refused alike
    for shape in ("having", "order", "limit", "time_field", "select"):
        assert oracle.coverage[f"shape:{shape}"] > 0, shape
