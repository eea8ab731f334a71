"""The compact text form, parsed by hand (recursive descent) into the same tree as the JSON form.

    query     := measures clause* | 'select' NAME (',' NAME)* clause*
                                         (each clause at most once, in any order)
    clause    := 'by' dimension (',' dimension)*
               | 'where' filter | 'having' filter
               | 'during' range ['on' NAME] | 'zone' STRING
               | 'order' 'by' column ['asc'|'desc'] (',' ...)*
               | 'limit' INT ['per' NAME (',' NAME)*] | 'compare' ['to'] 'previous' 'period'
               | 'fill' ('zero' | 'zeros') | 'after' STRING
    measure   := aggregate ['filter' '(' ['where'] filter ')'] ['as' NAME]
               | expr 'as' NAME                 (arithmetic between other measures' columns)
    aggregate := NAME | NAME '(' NAME [',' NUMBER] ')' | 'count' '(' '*' ')'
    expr      := term (('+' | '-') term)* ; term := factor (('*' | '/') factor)*
    factor    := NUMBER | NAME | '(' expr ')'
    dimension := NAME | UNIT '(' NAME [',' STRING] ')' | 'geohash' '(' NAME ',' INT ')'
               | 'histogram' '(' NAME ',' NUMBER ')'                 ['as' NAME]
    filter    := and ('or' and)* ; and := not ('and' not)* ; not := 'not' not | atom
    atom      := '(' filter ')' | NAME op value | NAME ['not'] 'in' ('(' values ')' | PARAM)
               | NAME 'is' ['not'] 'null' | NAME              (a boolean field: NAME = true)
               | NAME ':' value | NAME ':' '(' value ('or' value)* ')' | NAME ':' '*'     (KQL-like)
    range     := 'last' [INT] UNIT | 'this' UNIT | 'today' | 'yesterday'
               | (STRING|PARAM) '..' (STRING|PARAM) | 'from' (STRING|PARAM) 'to' (STRING|PARAM)
    value     := INT | FLOAT | STRING | 'true' | 'false' | PARAM

Keywords are case-insensitive; strings use single or double quotes (doubled to escape).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

from query_dsl import guards
from query_dsl.ast import (
    TIME_UNITS,
    AbsoluteRange,
    And,
    AnyMeasure,
    BinOp,
    Calc,
    Compare,
    CompareOp,
    Dimension,
    Expr,
    FieldDim,
    Filter,
    GeoDim,
    HistogramDim,
    InList,
    IsNull,
    Measure,
    Not,
    Num,
    Or,
    OrderItem,
    Param,
    Query,
    Ref,
    RelativeRange,
    TimeDim,
    TimeRange,
    TimeUnit,
    Value,
)
from query_dsl.errors import QuerySyntaxError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![A-Za-z_]))
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<param>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\.\.|>=|<=|!=|<>|==|[=<>:(),*+/-])
    """,
    re.VERBOSE,
)
_OPS: dict[str, CompareOp] = {
    "=": "eq", "==": "eq", "!=": "ne", "<>": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte",
}  # fmt: skip
_PERCENTILE = re.compile(r"^p(\d{1,2})(?:_(\d{1,3}))?$")
_CLAUSES = ("by", "where", "having", "during", "zone", "order", "limit", "compare", "fill", "after")
_ARITHMETIC = ("+", "-", "*", "/")
# What may follow a bare boolean field in a filter (``where is_cancelled and ...``).
_AFTER_BARE = {"and", "or", *_CLAUSES}
_UNIT_WORDS = {u: u for u in TIME_UNITS} | {f"{u}s": u for u in TIME_UNITS}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number | string | param | name | op | end
    text: str
    pos: int

    def word(self) -> str:
        return self.text.lower() if self.kind == "name" else ""


def tokenize(text: str) -> list[Token]:
    guards.check_text_size(text)
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QuerySyntaxError(
                f"unexpected character {text[pos]!r} at offset {pos}{_caret(text, pos)}", position=pos
            )
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _caret(text: str, pos: int) -> str:
    start = max(0, pos - 30)
    snippet = text[start : pos + 30].replace("\n", " ")
    return f"\n  {snippet}\n  {' ' * (pos - start)}^"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # token helpers ------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def fail(self, expected: str, tok: Token | None = None) -> QuerySyntaxError:
        tok = tok or self.tok
        got = "the end of the query" if tok.kind == "end" else repr(tok.text[:40])
        return QuerySyntaxError(
            f"expected {expected} at offset {tok.pos}, got {got}{_caret(self.text, tok.pos)}",
            position=tok.pos,
        )

    def at_word(self, *words: str) -> bool:
        return self.tok.word() in words

    def at_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def word(self, *words: str) -> str:
        if not self.at_word(*words):
            raise self.fail(" or ".join(repr(w) for w in words))
        return self.advance().word()

    def op(self, op: str) -> None:
        if not self.at_op(op):
            raise self.fail(repr(op))
        self.advance()

    def name(self, what: str = "a name") -> str:
        if self.tok.kind != "name":
            raise self.fail(what)
        return self.advance().text

    def integer(self, what: str) -> int:
        tok = self.tok
        if tok.kind != "number" or not re.fullmatch(r"-?\d+", tok.text):
            raise self.fail(what)
        self.advance()
        return guards.check_int_literal(int(tok.text), what)

    def string(self) -> str:
        tok = self.tok
        if tok.kind != "string":
            raise self.fail("a quoted string")
        self.advance()
        quote = tok.text[0]
        return tok.text[1:-1].replace(quote * 2, quote)

    def comma_list(self, item: Callable[[], T]) -> list[T]:
        items = [item()]
        while self.at_op(","):
            self.advance()
            items.append(item())
        return items

    def alias(self) -> str | None:
        if self.at_word("as"):
            self.advance()
            return self.name("a column name after 'as'")
        return None

    def expect_end(self) -> None:
        if self.tok.kind != "end":
            raise self.fail("the end of the query or a clause (" + ", ".join(_CLAUSES) + ")")

    # query --------------------------------------------------------------------------------
    def query(self) -> Query:
        select: tuple[str, ...] = ()
        measures: tuple[AnyMeasure, ...] = ()
        if self.at_word("select"):
            self.advance()
            select = tuple(self.comma_list(lambda: self.name("a field to list")))
        else:
            measures = tuple(self.comma_list(self.measure))
        parts: dict[str, object] = {}
        while self.tok.kind != "end":
            if not self.at_word(*_CLAUSES):
                raise self.fail("a clause (" + ", ".join(_CLAUSES) + ") or the end of the query")
            clause = self.advance().word()
            if clause in parts:
                raise QuerySyntaxError(f"the {clause!r} clause appears twice", position=self.tok.pos)
            parts[clause] = self.clause(clause)
        if "during" not in parts:
            raise QuerySyntaxError(
                "a query needs a time range: add e.g. 'during last 7 days' or \"during '2026-11-01' .. "
                "'2026-11-08'\""
            )
        time_range, time_field = cast(tuple[TimeRange, str], parts["during"])
        limit, per = cast(tuple[int | None, tuple[str, ...]], parts.get("limit", (None, ())))
        return Query(
            measures=measures,
            time_range=time_range,
            dimensions=cast(tuple[Dimension, ...], parts.get("by", ())),
            filter=cast(Filter | None, parts.get("where")),
            having=cast(Filter | None, parts.get("having")),
            order=cast(tuple[OrderItem, ...], parts.get("order", ())),
            limit=limit,
            zone=cast(str, parts.get("zone", Query.__dataclass_fields__["zone"].default)),
            compare=cast(None, parts.get("compare")),
            per=per,
            fill=bool(parts.get("fill", False)),
            time_field=time_field,
            select=select,
            cursor=cast(str | None, parts.get("after")),
        )

    def clause(self, clause: str) -> object:
        if clause == "by":
            return tuple(self.comma_list(self.dimension))
        if clause in ("where", "having"):
            return self.filter(0)
        if clause == "during":
            time_range = self.range()
            field = Query.__dataclass_fields__["time_field"].default
            if self.at_word("on"):
                self.advance()
                field = self.name("a time field (from_date, booking_created, to_date)")
            return time_range, field
        if clause in ("zone", "after"):
            return self.string()
        if clause == "order":
            self.word("by")
            return tuple(self.comma_list(self.order_item))
        if clause == "limit":
            return self.limit()
        if clause == "fill":
            self.word("zero", "zeros")
            return True
        if self.at_word("to"):  # compare [to] previous period
            self.advance()
        self.word("previous")
        self.word("period")
        return "previous_period"

    def limit(self) -> tuple[int, tuple[str, ...]]:
        count = self.integer("a row limit (an integer)")
        per: tuple[str, ...] = ()
        if self.at_word("per"):
            self.advance()
            per = tuple(self.comma_list(lambda: self.name("a dimension column")))
        return count, per

    def measure(self) -> AnyMeasure:
        """An aggregate (optionally filtered), or arithmetic between other measures' columns."""
        start = self.i
        if self.tok.kind == "name" and not self._arithmetic_follows_name():
            measure = self.aggregate()
            if self.at_op(*_ARITHMETIC):
                self.i = start
                raise self.fail("a name or a number: arithmetic takes measure columns, not aggregates "
                                "(write 'sum(distance_km) as total, total / count as mean')")  # fmt: skip
            if self.at_word("filter"):
                self.advance()
                self.op("(")
                if self.at_word("where"):
                    self.advance()
                where = self.filter(1)
                self.op(")")
                measure = Measure(measure.fn, measure.field, measure.p, None, where)
            alias = self.alias()
            return Measure(measure.fn, measure.field, measure.p, alias, measure.where)
        expr = self.expr(0)
        if not self.at_word("as"):
            raise self.fail("'as NAME': an arithmetic measure needs a name")
        alias = self.alias()
        assert alias is not None
        return Calc(expr, alias)

    def _arithmetic_follows_name(self) -> bool:
        """``cancelled / count``: a name followed by an operator is a column in an expression."""
        following = self.tokens[min(self.i + 1, len(self.tokens) - 1)]
        if following.kind == "op" and following.text in _ARITHMETIC:
            return True
        return following.kind == "number" and following.text.startswith("-")  # count-1

    def aggregate(self) -> Measure:
        fn = self.name("a measure (count, cancellation_rate, avg(field), p95(field), ...)")
        field: str | None = None
        p: float | None = None
        if self.at_op("("):
            self.advance()
            if fn.lower() == "count" and self.at_op("*"):
                self.advance()
            else:
                field = self.name("a field name")
                if self.at_op(","):
                    self.advance()
                    p = self.number("a percentile (0 < p < 100)")
            self.op(")")
        match = _PERCENTILE.match(fn.lower())
        if match and field is not None and p is None:
            fn, p = "percentile", float(f"{match.group(1)}.{match.group(2) or 0}")
        return Measure(fn.lower(), field, p)

    # arithmetic ---------------------------------------------------------------------------
    def expr(self, depth: int) -> Expr:
        guards.check_depth(depth)
        node = self.term(depth)
        while self.at_op("+", "-") or self._split_negative_number():
            op = cast(Literal["+", "-"], self.advance().text)
            node = BinOp(op, node, self.term(depth))
        return node

    def term(self, depth: int) -> Expr:
        node = self.factor(depth)
        while self.at_op("*", "/"):
            op = cast(Literal["*", "/"], self.advance().text)
            node = BinOp(op, node, self.factor(depth))
        return node

    def factor(self, depth: int) -> Expr:
        tok = self.tok
        if tok.kind == "number":
            self.advance()
            return Num(float(tok.text))
        if tok.kind == "name":
            return Ref(self.advance().text)
        if self.at_op("("):
            self.advance()
            inner = self.expr(depth + 1)
            self.op(")")
            return inner
        raise self.fail("a measure column, a number or '('")

    def _split_negative_number(self) -> bool:
        """``count -1`` tokenizes as a negative number; after an operand it is a subtraction: the
        token becomes ``-`` and the number."""
        tok = self.tok
        if tok.kind != "number" or not tok.text.startswith("-"):
            return False
        self.tokens[self.i : self.i + 1] = [
            Token("op", "-", tok.pos),
            Token("number", tok.text[1:], tok.pos + 1),
        ]
        return True

    def number(self, what: str) -> float:
        tok = self.tok
        if tok.kind != "number":
            raise self.fail(what)
        self.advance()
        return float(tok.text)

    def dimension(self) -> Dimension:
        first = self.name("a dimension (a field, hour(from_date), geohash(pickup, 6), ...)")
        lower = first.lower()
        if self.at_op("(") and lower in TIME_UNITS:
            self.advance()
            field = self.name("a time field (from_date, to_date, booking_created)")
            zone = None
            if self.at_op(","):
                self.advance()
                zone = self.string()
            self.op(")")
            return TimeDim(field, _UNIT_WORDS[lower], zone, self.alias())
        if self.at_op("(") and lower == "histogram":
            self.advance()
            field = self.name("a number field")
            self.op(",")
            width = self.number("a bucket width (a positive number)")
            self.op(")")
            return HistogramDim(field, width, self.alias())
        if self.at_op("(") and lower == "geohash":
            self.advance()
            field = self.name("a point (pickup, dropoff)")
            self.op(",")
            precision = self.integer("a geohash precision (1..8)")
            self.op(")")
            return GeoDim(field, precision, self.alias())
        if self.at_op("("):
            raise self.fail(
                f"a dimension; {first}(...) is not a bucket function (minute..month, geohash, histogram)"
            )
        return FieldDim(first, self.alias())

    def order_item(self) -> OrderItem:
        column = self.name("a column to order by")
        descending = False
        if self.at_word("asc", "desc"):
            descending = self.advance().word() == "desc"
        return OrderItem(column, descending)

    # filters ------------------------------------------------------------------------------
    def filter(self, depth: int) -> Filter:
        guards.check_depth(depth)
        items = [self.conjunction(depth)]
        while self.at_word("or"):
            self.advance()
            items.append(self.conjunction(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self, depth: int) -> Filter:
        items = [self.negation(depth)]
        while self.at_word("and"):
            self.advance()
            items.append(self.negation(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def negation(self, depth: int) -> Filter:
        if self.at_word("not"):
            self.advance()
            guards.check_depth(depth + 1)
            return Not(self.negation(depth + 1))
        return self.atom(depth)

    def atom(self, depth: int) -> Filter:
        if self.at_op("("):
            self.advance()
            inner = self.filter(depth + 1)
            self.op(")")
            return inner
        field = self.name("a field name or '('")
        if self.tok.kind == "op" and self.tok.text in _OPS:
            op = _OPS[self.advance().text]
            return Compare(field, op, self.value())
        if self.at_op(":"):
            return self.kql(field)
        if self.at_word("is"):
            self.advance()
            negated = False
            if self.at_word("not"):
                self.advance()
                negated = True
            self.word("null")
            return IsNull(field, negated)
        negated = False
        if self.at_word("not"):
            self.advance()
            negated = True
        if not negated and (self.tok.kind == "end" or self.at_op(")") or self.tok.word() in _AFTER_BARE):
            return Compare(field, "eq", True)  # a bare boolean field: ``where is_cancelled``
        if self.at_word("in"):
            self.advance()
            if self.tok.kind == "param":
                return InList(field, Param(self.advance().text[1:]), negated)
            self.op("(")
            values = self.comma_list(self.value)
            guards.check_list_size(len(values), field)
            self.op(")")
            return InList(field, tuple(values), negated)
        raise self.fail("a comparison (=, !=, <, <=, >, >=, :, in, is null) after the field name")

    def kql(self, field: str) -> Filter:
        self.op(":")
        if self.at_op("*"):
            self.advance()
            return IsNull(field, negated=True)
        if self.at_op("("):
            self.advance()
            values = [self.value()]
            while self.at_word("or"):
                self.advance()
                values.append(self.value())
                guards.check_list_size(len(values), field)
            self.op(")")
            return InList(field, tuple(values)) if len(values) > 1 else Compare(field, "eq", values[0])
        return Compare(field, "eq", self.value())

    def value(self) -> Value:
        tok = self.tok
        if tok.kind == "number":
            self.advance()
            if re.fullmatch(r"-?\d+", tok.text):
                return guards.check_int_literal(int(tok.text), "an integer value")
            return float(tok.text)
        if tok.kind == "string":
            return self.string()
        if tok.kind == "param":
            self.advance()
            return Param(tok.text[1:])
        if self.at_word("true", "false"):
            return self.advance().word() == "true"
        if tok.kind == "name":  # KQL allows bare words: booking_channel:online
            return self.advance().text
        raise self.fail("a value (number, 'string', true, false or $param)")

    # time range ---------------------------------------------------------------------------
    def range(self) -> TimeRange:
        if self.at_word("today"):
            self.advance()
            return RelativeRange("this", 1, "day")
        if self.at_word("yesterday"):
            self.advance()
            return RelativeRange("last", 1, "day")
        if self.at_word("this"):
            self.advance()
            return RelativeRange("this", 1, self.unit())
        if self.at_word("last"):
            self.advance()
            count = 1
            if self.tok.kind == "number":
                count = self.integer("a count of units")
                guards.check_relative_count(count)
            return RelativeRange("last", count, self.unit())
        if self.at_word("from"):
            self.advance()
            start = self.bound()
            self.word("to")
            return AbsoluteRange(start, self.bound())
        start = self.bound()
        self.op("..")
        return AbsoluteRange(start, self.bound())

    def unit(self) -> TimeUnit:
        word = self.tok.word()
        if word not in _UNIT_WORDS:
            raise self.fail("a unit (minutes, hours, days, weeks, months)")
        self.advance()
        return _UNIT_WORDS[word]

    def bound(self) -> str | Param:
        if self.tok.kind == "param":
            return Param(self.advance().text[1:])
        if self.tok.kind != "string":
            raise self.fail("a quoted date or timestamp ('2026-11-01', '2026-11-01T06:00') or $param")
        return self.string()


def _parse(text: str, rule: Callable[[_Parser], T]) -> T:
    parser = _Parser(text)
    result = rule(parser)
    parser.expect_end()
    return result


def parse_query(text: str) -> Query:
    return _parse(text, _Parser.query)


def parse_filter(text: str) -> Filter:
    return _parse(text, lambda p: p.filter(0))


def parse_measure(text: str) -> AnyMeasure:
    return _parse(text, _Parser.measure)


def parse_expr(text: str) -> Expr:
    return _parse(text, lambda p: p.expr(0))


def parse_dimension(text: str) -> Dimension:
    return _parse(text, _Parser.dimension)


def parse_range(text: str) -> TimeRange:
    return _parse(text, _Parser.range)
