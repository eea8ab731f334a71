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
    """``fn`` is count, count_distinct, sum, avg, min, max, percentile or a catalog ratio."""

    fn: str
    field: str | None = None
    p: float | None = None  # percentile, 0 < p < 100
    alias: str | None = None

    @property
    def name(self) -> str:
        if self.alias:
            return self.alias
        if self.fn == "percentile":
            return f"p{format_number(self.p)}_{self.field}".replace(".", "_")
        if self.field is None:
            return self.fn
        return f"{self.fn}_{self.field}"


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


Dimension = FieldDim | TimeDim | GeoDim


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
    measures: tuple[Measure, ...]
    time_range: TimeRange
    dimensions: tuple[Dimension, ...] = ()
    filter: Filter | None = None
    having: Filter | None = None
    order: tuple[OrderItem, ...] = ()
    limit: int | None = None
    zone: str = DEFAULT_ZONE
    compare: Literal["previous_period"] | None = None


def format_number(value: float | None) -> str:
    """``95.0`` -> ``95``, ``99.9`` -> ``99.9``: how percentiles are named."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
