"""Every engine rounds the enrichment's minutes as Python's ``round`` does (query_dsl/rounding.py).

The stream job stores ``round(minutes, 2)`` of a double: half to even on the binary value. SQL's
``round`` is half away from zero, which put a 7.5 s lead time at 0.13 min in PostgreSQL and DuckDB
but 0.12 in Elasticsearch. Here DuckDB (in process) runs the catalog's SQL over differences built to
hit every kind of tie, and over random ones; PostgreSQL runs the same expression in the oracle.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from loadgen.synthetic import make_rides
from query_dsl.catalog import FIELDS
from query_dsl.rounding import round_minutes
from xrides.ride import RIDE_FIELDS, parquet_schema
from xrides.ride.enrich import ServiceRegion, enrich


def _python(d_us: int) -> float:
    return round(timedelta(microseconds=d_us).total_seconds() / 60, 2)


def _differences() -> list[int]:
    rng = random.Random(5)
    ties = [300_000 * (2 * j + 1) for j in range(-2000, 2000)]  # every odd multiple of 0.3 s
    ties += [300_000 * (2 * rng.randrange(-(10**7), 10**7) + 1) for _ in range(5000)]  # up to weeks
    plain = [rng.randrange(-(10**12), 10**12) for _ in range(5000)]
    whole_seconds = [1_000_000 * rng.randrange(0, 14 * 86400) for _ in range(5000)]
    return ties + plain + whole_seconds


def test_duckdb_rounds_every_tie_as_python_does() -> None:
    values = _differences()
    con = duckdb.connect()
    con.register("d", pa.table({"d": values}))
    got = [row[0] for row in con.execute(f"SELECT {round_minutes('d', 'duckdb')} FROM d").fetchall()]
    wrong = [(d, g, _python(d)) for d, g in zip(values, got, strict=True) if g != _python(d)]
    assert not wrong, wrong[:5]
    # the SQL round this replaces gets thousands of them wrong
    naive = [row[0] for row in con.execute("SELECT round(d / 1e6 / 60, 2) FROM d").fetchall()]
    assert sum(1 for d, g in zip(values, naive, strict=True) if g != _python(d)) > 1000


def test_a_null_difference_stays_null() -> None:
    con = duckdb.connect()
    con.register("d", pa.table({"d": pa.array([None, 450_000], pa.int64())}))
    assert con.execute(f"SELECT {round_minutes('d', 'duckdb')} FROM d").fetchall() == [(None,), (0.01,)]


def test_the_catalogs_minutes_equal_the_enrichment_on_subsecond_rides() -> None:
    """Rides whose timestamps carry milliseconds (a third of them on a tie) through the catalog's
    DuckDB forms, against the documents the Flink job stores."""
    rides = make_rides(3000, datetime(2026, 11, 20, tzinfo=UTC), 5, seed=3, subsecond=1.0)
    table = pa.Table.from_pydict({f.name: [getattr(r, f.name) for r in rides] for f in RIDE_FIELDS},
                                 schema=parquet_schema())  # fmt: skip
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("rides", table)
    names = ("lead_time_min", "trip_duration_min")
    sql = f"SELECT booking_id, {', '.join(FIELDS[n].duckdb for n in names)} FROM rides ORDER BY booking_id"
    zone, region = ZoneInfo("Asia/Kolkata"), ServiceRegion()
    ties = 0
    for ride, row in zip(sorted(rides, key=lambda r: r.booking_id), con.execute(sql).fetchall(), strict=True):
        doc = enrich(ride, zone, region)
        assert (row[1], row[2]) == (doc["lead_time_min"], doc["trip_duration_min"]), ride.booking_id
        difference = ride.from_date - ride.booking_created
        ties += abs(difference // timedelta(microseconds=1)) % 600_000 == 300_000
    assert ties > 200  # the data did test ties (about 9% of these rides)
