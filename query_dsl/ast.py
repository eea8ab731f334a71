"""The syntax tree both query forms parse to: frozen dataclasses, compared by value.

The tree holds names as the user wrote them; :mod:`query_dsl.plan` checks them against the
catalog. Values are plain JSON scalars or a :class:`Param` placeholder bound later by value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scalar = int | float | str | bool | None
TimeUnit = Literal["minute", "hour", "day", "week", "month"]
TIME_UNITS: tuple[TimeUnit, ...] = ("minute", "hour", "day", "week", "month")
CompareOp = Literal["eq", "ne", "lt", "lte", "gt", "gte"]
COMPARE_OPS: tuple[CompareOp, ...] = ("eq", "ne", "lt", "lte", "gt", "gte")
DEFAULT_ZONE = "Asia/Kolkata"


@dataclass(frozen=True, slots=True)
class Param:
    """``$name``: a value supplied apart from the query and bound as a parameter."""

    name: str


Value = Scalar | Param


# Measures ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measure:
    """``fn`` is count, count_distinct, sum, avg, min, max, percentile or a catalog ratio.

    ``where``: a filtered measure (Druid's filtered aggregator, SQL's ``FILTER (WHERE ...)``): it
    counts only the rides of its group for which the filter holds, beside unfiltered measures.
    """

    fn: str
    field: str | None = None
    p: float | None = None  # percentile, 0 < p < 100
    alias: str | None = None
    where: Filter | None = None

    @property
    def name(self) -> str:
        if self.alias:
            return self.alias
        if self.fn == "percentile":
            base = f"p{format_number(self.p)}_{self.field}".replace(".", "_")
        elif self.field is None:
            base = self.fn
        else:
            base = f"{self.fn}_{self.field}"
        if self.where is not None:
            return f"{base}_where_{'_'.join(filter_fields(self.where))}"
        return base


@dataclass(frozen=True, slots=True)
class Num:
    value: float


@dataclass(frozen=True, slots=True)
class Ref:
    """Another measure's column, by name."""

    name: str


@dataclass(frozen=True, slots=True)
class BinOp:
    op: Literal["+", "-", "*", "/"]
    left: Expr
    right: Expr


Expr = Num | Ref | BinOp


@dataclass(frozen=True, slots=True)
class Calc:
    """Arithmetic between measures, after aggregation: ``cancelled / count as cancel_share``.

    It always has a name (``as``): an expression has no natural one.
    """

    expr: Expr
    alias: str

    @property
    def name(self) -> str:
        return self.alias


AnyMeasure = Measure | Calc


def expr_text(expr: Expr) -> str:
    """The canonical spelling: every operation in parentheses, numbers as written by ``repr``."""
    if isinstance(expr, Num):
        return format_number(expr.value)
    if isinstance(expr, Ref):
        return expr.name
    return f"({expr_text(expr.left)} {expr.op} {expr_text(expr.right)})"


def expr_refs(expr: Expr) -> list[str]:
    if isinstance(expr, Ref):
        return [expr.name]
    if isinstance(expr, BinOp):
        return [*expr_refs(expr.left), *expr_refs(expr.right)]
    return []


# Dimensions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldDim:
    field: str
    alias: str | None = None

    @property
    def name(self) -> str:
        return self.alias or self.field


@dataclass(frozen=True, slots=True)
class TimeDim:
    """A time bucket: ``unit`` of ``field`` in ``zone`` (None: the query's zone)."""

    field: str
    unit: TimeUnit
    zone: str | None = None
    alias: str | None = None

    @property
    def name(self) -> str:
        return self.alias or f"{self.unit}_{self.field}"


@dataclass(frozen=True, slots=True)
class GeoDim:
    """A geohash cell of a point field (pickup, dropoff) at ``precision`` characters."""

    field: str
    precision: int
    alias: str | None = None

    @property
    def name(self) -> str:
        return self.alias or f"geohash{self.precision}_{self.field}"


@dataclass(frozen=True, slots=True)
class HistogramDim:
    """Fixed-width buckets of a number: ``histogram(lead_time_min, 15)`` -> 0, 15, 30, ... (the bucket's
    lower bound, ``floor(value / width) * width``); a ride without the value is in the null bucket."""

    field: str
    width: float
    alias: str | None = None

    @property
    def name(self) -> str:
        return self.alias or f"{self.field}_per_{format_number(self.width)}".replace(".", "_")


Dimension = FieldDim | TimeDim | GeoDim | HistogramDim


# Filters ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compare:
    field: str
    op: CompareOp
    value: Value


@dataclass(frozen=True, slots=True)
class InList:
    field: str
    values: tuple[Value, ...] | Param
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IsNull:
    field: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Filter


Filter = Compare | InList | IsNull | And | Or | Not


def filter_fields(f: Filter) -> list[str]:
    """The fields a filter names, in order of first appearance (a filtered measure's default name)."""
    if isinstance(f, And | Or):
        names: list[str] = []
        for item in f.items:
            names.extend(n for n in filter_fields(item) if n not in names)
        return names
    if isinstance(f, Not):
        return filter_fields(f.item)
    return [f.field]


# Time range, order, query -----------------------------------------------------------------

RelativeKind = Literal["last", "this"]


@dataclass(frozen=True, slots=True)
class RelativeRange:
    """``last N units`` (the N whole units before the current one) or ``this unit``."""

    kind: RelativeKind
    count: int
    unit: TimeUnit

    def text(self) -> str:
        if self.kind == "this":
            return f"this {self.unit}"
        return f"last {self.count} {self.unit}{'s' if self.count != 1 else ''}"


@dataclass(frozen=True, slots=True)
class AbsoluteRange:
    """``[start, end)``: ISO dates or timestamps; without an offset they are in the query's zone."""

    start: str | Param
    end: str | Param


TimeRange = RelativeRange | AbsoluteRange


@dataclass(frozen=True, slots=True)
class OrderItem:
    column: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """An aggregation (``measures`` by ``dimensions``) or, with ``select``, a listing of rides.

    ``per``: the top ``limit`` rows within each group of these dimension columns (top 3 pickup areas
    per day). ``fill``: every time bucket of the range, empty ones included (counts 0). ``time_field``:
    the timestamp the range applies to. ``cursor``: where the previous page of a listing ended.
    """

    measures: tuple[AnyMeasure, ...]
    time_range: TimeRange
    dimensions: tuple[Dimension, ...] = ()
    filter: Filter | None = None
    having: Filter | None = None
    order: tuple[OrderItem, ...] = ()
    limit: int | None = None
    zone: str = DEFAULT_ZONE
    compare: Literal["previous_period"] | None = None
    per: tuple[str, ...] = ()
    fill: bool = False
    time_field: str = "from_date"
    select: tuple[str, ...] = ()
    cursor: str | None = None


def format_number(value: float | None) -> str:
    """``95.0`` -> ``95``, ``99.9`` -> ``99.9``: how percentiles are named."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
