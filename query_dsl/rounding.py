"""Python's ``round()`` in SQL, for the enrichment's minutes (``lead_time_min``, ``trip_duration_min``).

The stream job stores ``round(minutes, 2)`` computed in Python: the double nearest the exact
difference, rounded half to even *on its binary value*. SQL's ``round`` rounds half away from zero
(and PostgreSQL's ``float8 -> numeric`` keeps only 15 digits), so a difference of 7.5 s was
0.13 min in PostgreSQL and DuckDB but 0.12 in Elasticsearch. Here each engine computes Python's
answer exactly:

- the difference is taken in whole microseconds ``D`` (exact integers in both engines);
- ``D`` is a rounding tie for two decimals only when ``D`` is an odd multiple of 0.3 s
  (``|D| mod 600000 = 300000``). Otherwise the exact value is at least 1/600000 of a unit away from
  a tie, far more than any double's error, so every rounding gives ``k = round(D / 600000)``;
- on a tie, Python's double ``m = (D / 1e6) / 60`` is compared with the exact ``D / 6e7`` by
  computing ``m * 6e7`` exactly as a sum of two doubles (Dekker's product with Veltkamp's split,
  plain IEEE arithmetic that PostgreSQL's ``float8`` and DuckDB's ``DOUBLE`` both follow): above ->
  up, below -> down, equal (0.125, 0.375, ... exactly) -> to even. Ties are rare, so the long
  branch costs nothing in practice; the common branch is two integer tests and a division.

``tests/unit/test_query_dsl_rounding.py`` checks DuckDB against Python over every kind of tie;
the oracle checks PostgreSQL against Elasticsearch's stored values.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["pg", "duckdb"]

_SPLIT = "134217729"  # 2**27 + 1: Veltkamp's constant for 53-bit doubles
_US_PER_HUNDREDTH_MIN = 600_000  # microseconds in 0.01 minute
_US_PER_MIN = 60_000_000


def microseconds(later: str, earlier: str, dialect: Dialect) -> str:
    """``later - earlier`` in whole microseconds (bigint; null when either is null)."""
    if dialect == "pg":
        # date_part on an interval is a float8 of seconds, exact to far below a microsecond for
        # any span a ride has; rounding recovers the integer (numeric extract would be slower).
        return f"round(date_part('epoch', {later} - {earlier}) * 1000000)::int8"
    return f"(epoch_us({later}) - epoch_us({earlier}))"


def _double(expr: str, dialect: Dialect) -> str:
    return f"({expr})::float8" if dialect == "pg" else f"CAST({expr} AS DOUBLE)"


def _int_div(expr: str, divisor: int, dialect: Dialect) -> str:
    return f"(({expr}) / {divisor})" if dialect == "pg" else f"(({expr}) // {divisor})"


def round_minutes(d_us: str, dialect: Dialect) -> str:
    """``round(D / 6e7, 2)`` as Python computes it from ``(D / 1e6) / 60``: a double or null."""
    d = _double(d_us, dialect)
    m = f"({d} / 1000000.0 / 60.0)"
    if dialect == "pg":
        m = f"({d} / 1000000.0::float8 / 60.0::float8)"
    product = f"({m} * {_US_PER_MIN}.0)"
    scaled = f"({m} * {_SPLIT}.0)"
    high = f"({scaled} - ({scaled} - {m}))"
    low = f"({m} - {high})"
    error = f"(({high} * {_US_PER_MIN}.0 - {product}) + {low} * {_US_PER_MIN}.0)"
    above = f"({product} - {d})"  # exact: the two are within a few units in the last place
    lower = _int_div(f"{d_us} - {_US_PER_HUNDREDTH_MIN // 2}", _US_PER_HUNDREDTH_MIN, dialect)
    odd = f"CASE WHEN {lower} % 2 <> 0 THEN 1 ELSE 0 END"
    tie = (
        f"(CASE WHEN {above} > -{error} THEN {lower} + 1 WHEN {above} < -{error} THEN {lower}"
        f" ELSE {lower} + {odd} END)"
    )
    hundredths = f"round({d} / {_US_PER_HUNDREDTH_MIN}.0)"
    if dialect == "pg":
        hundredths = f"round({d} / {_US_PER_HUNDREDTH_MIN}.0::float8)"
        return (
            f"(CASE WHEN abs({d_us}) % {_US_PER_HUNDREDTH_MIN} <> {_US_PER_HUNDREDTH_MIN // 2}"
            f" THEN {hundredths} / 100.0::float8 ELSE ({tie})::float8 / 100.0::float8 END)"
        )
    return (
        f"(CASE WHEN abs({d_us}) % {_US_PER_HUNDREDTH_MIN} <> {_US_PER_HUNDREDTH_MIN // 2}"
        f" THEN {hundredths} / 100.0 ELSE CAST({tie} AS DOUBLE) / 100.0 END)"
    )


def minutes_sql(later: str, earlier: str, dialect: Dialect) -> str:
    """Minutes from ``earlier`` to ``later``, rounded to 2 decimals exactly as the enrichment does."""
    return round_minutes(microseconds(later, earlier, dialect), dialect)
