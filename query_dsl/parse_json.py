"""The JSON form (and the same written as YAML) into the syntax tree: strict, with the path of every error.

Unknown keys, duplicate keys, NaN/Infinity and values of the wrong JSON type are refused;
string shorthands (``"p95(lead_time_min)"``, ``"hour(from_date)"``, a text filter, ``"last 7 days"``)
go through the text parser, so both forms mean exactly the same.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime
from typing import Any, cast

import yaml

from query_dsl import guards, parse_text
from query_dsl.ast import (
    COMPARE_OPS,
    TIME_UNITS,
    AbsoluteRange,
    And,
    AnyMeasure,
    Calc,
    Compare,
    CompareOp,
    Dimension,
    FieldDim,
    Filter,
    GeoDim,
    HistogramDim,
    InList,
    IsNull,
    Measure,
    Not,
    Or,
    OrderItem,
    Param,
    Query,
    TimeDim,
    TimeRange,
    TimeUnit,
    Value,
)
from query_dsl.errors import QueryError, QueryLimitExceeded
from xrides.jsonkeys import pairs_hook

QUERY_KEYS = (
    "measures", "dimensions", "filter", "time_range", "zone", "having", "order", "limit", "compare",
    "per", "fill", "time_field", "select", "cursor",
)  # fmt: skip
_PARAM = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_OP_SYMBOLS: dict[str, CompareOp] = {"=": "eq", "!=": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
Params = dict[str, Any]
_NO_DUPLICATES = pairs_hook(QueryError)


# Decoding ---------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise QueryError(f"{name} is not a number the query language accepts")


def load_json(text: str | bytes) -> Any:
    raw = text.decode("utf-8", errors="strict") if isinstance(text, bytes) else text
    guards.check_text_size(raw)
    try:
        doc = json.loads(raw, object_pairs_hook=_NO_DUPLICATES, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise QueryError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise QueryLimitExceeded("the query document nests too deeply") from exc
    guards.check_document(doc)
    return doc


def load_yaml(text: str) -> Any:
    guards.check_text_size(text)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise QueryError(f"not valid YAML: {str(exc)[:200]}") from exc
    except RecursionError as exc:
        raise QueryLimitExceeded("the query document nests too deeply") from exc
    guards.check_document(doc)
    return _plain(doc, "$")


def _plain(node: Any, path: str) -> Any:
    """YAML's dates become ISO strings; anything JSON cannot hold is refused."""
    if isinstance(node, datetime | date):
        return node.isoformat()
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise QueryError(f"keys must be strings, not {type(key).__name__}", path)
            out[key] = _plain(value, f"{path}.{key}")
        return out
    if isinstance(node, list):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(node)]
    if node is None or isinstance(node, str | int | float | bool):
        if isinstance(node, float) and not math.isfinite(node):
            raise QueryError("NaN and Infinity are not accepted", path)
        return node
    raise QueryError(f"{type(node).__name__} is not a JSON value", path)


def load_document(text: str | bytes) -> Any:
    """JSON when it parses as JSON, else YAML (YAML is a superset, but JSON's errors are clearer)."""
    stripped = text.lstrip()[:1]
    if stripped in ("{", b"{"):
        return load_json(text)
    return load_yaml(text.decode() if isinstance(text, bytes) else text)


# Interpreting -----------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)  # fmt: skip


def _expect(value: Any, kind: type | tuple[type, ...], what: str, path: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise QueryError(f"expected {what}, got {_type_name(value)}", path)
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _keys(obj: dict[str, Any], allowed: tuple[str, ...], path: str, required: tuple[str, ...] = ()) -> None:
    for key in obj:
        if key not in allowed:
            raise QueryError(f"unknown key {key[:40]!r}; expected one of {', '.join(allowed)}", path)
    for key in required:
        if key not in obj:
            raise QueryError(f"missing key {key!r}", path)


def _shorthand(text: Any, rule: Any, path: str) -> Any:
    try:
        return rule(text)
    except QueryError as exc:
        raise type(exc)(exc.message, path, **{k: v for k, v in exc.details.items() if k != "path"}) from exc


def _alias(obj: dict[str, Any], path: str) -> str | None:
    if "as" not in obj:
        return None
    return cast(str, _expect(obj["as"], str, "a column name", f"{path}.as"))


def _measure(node: Any, path: str) -> AnyMeasure:
    if isinstance(node, str):
        return cast(AnyMeasure, _shorthand(node, parse_text.parse_measure, path))
    obj = _expect(node, dict, "a measure (a string or an object)", path)
    if "calc" in obj:
        _keys(obj, ("calc", "as"), path, ("calc", "as"))
        text = _expect(obj["calc"], str, "an arithmetic expression over measure columns", f"{path}.calc")
        expr = _shorthand(text, parse_text.parse_expr, f"{path}.calc")
        return Calc(expr, cast(str, _alias(obj, path)))
    _keys(obj, ("fn", "field", "p", "as", "where"), path, ("fn",))
    field = None if obj.get("field") is None else _expect(obj["field"], str, "a field name", f"{path}.field")
    p = obj.get("p")
    if p is not None:
        p = float(_expect(p, (int, float), "a percentile (0 < p < 100)", f"{path}.p"))
    fn = _expect(obj["fn"], str, "a measure name", f"{path}.fn")
    where = None if obj.get("where") is None else filter_from(obj["where"], f"{path}.where", 1)
    return Measure(fn, field, p, _alias(obj, path), where)


def _dimension(node: Any, path: str) -> Dimension:
    if isinstance(node, str):
        return cast(Dimension, _shorthand(node, parse_text.parse_dimension, path))
    obj = _expect(node, dict, "a dimension (a string or an object)", path)
    if "time" in obj:
        _keys(obj, ("time", "unit", "zone", "as"), path, ("unit",))
        unit = _expect(obj["unit"], str, "a time unit", f"{path}.unit")
        if unit not in TIME_UNITS:
            raise QueryError(
                f"unit must be one of {', '.join(TIME_UNITS)}, not {unit[:20]!r}", f"{path}.unit"
            )
        zone = obj.get("zone")
        if zone is not None:
            _expect(zone, str, "a time zone name", f"{path}.zone")
        field = _expect(obj["time"], str, "a time field", f"{path}.time")
        return TimeDim(field, cast(TimeUnit, unit), zone, _alias(obj, path))
    if "histogram" in obj:
        _keys(obj, ("histogram", "width", "as"), path, ("width",))
        width = float(_expect(obj["width"], (int, float), "a bucket width (a number)", f"{path}.width"))
        field = _expect(obj["histogram"], str, "a number field", f"{path}.histogram")
        return HistogramDim(field, width, _alias(obj, path))
    if "geohash" in obj:
        _keys(obj, ("geohash", "precision", "as"), path, ("precision",))
        precision = _expect(obj["precision"], int, "a precision (1..8)", f"{path}.precision")
        return GeoDim(
            _expect(obj["geohash"], str, "a point", f"{path}.geohash"), precision, _alias(obj, path)
        )
    _keys(obj, ("field", "as"), path, ("field",))
    return FieldDim(_expect(obj["field"], str, "a field name", f"{path}.field"), _alias(obj, path))


def _value(node: Any, path: str) -> Value:
    if isinstance(node, str):
        match = _PARAM.match(node)
        return Param(match.group(1)) if match else node
    if isinstance(node, int) and not isinstance(node, bool):
        return guards.check_int_literal(node, "an integer value", path)
    return cast(Value, _expect(node, (int, float, bool), "a value (number, string, boolean or $param)", path))


def filter_from(node: Any, path: str, depth: int = 0) -> Filter:
    guards.check_depth(depth, path)
    if isinstance(node, str):
        return cast(Filter, _shorthand(node, parse_text.parse_filter, path))
    obj = _expect(node, dict, "a filter (a string or an object)", path)
    for combinator in ("and", "or"):
        if combinator in obj:
            _keys(obj, (combinator,), path)
            items = _expect(obj[combinator], list, f"a list of filters under {combinator!r}", path)
            if not items:
                raise QueryError(f"{combinator!r} needs at least one filter", f"{path}.{combinator}")
            parsed = tuple(
                filter_from(x, f"{path}.{combinator}[{i}]", depth + 1) for i, x in enumerate(items)
            )
            return And(parsed) if combinator == "and" else Or(parsed)
    if "not" in obj:
        _keys(obj, ("not",), path)
        return Not(filter_from(obj["not"], f"{path}.not", depth + 1))
    _keys(obj, ("field", "op", "value", "values"), path, ("field", "op"))
    field = _expect(obj["field"], str, "a field name", f"{path}.field")
    op = _expect(obj["op"], str, "an operator", f"{path}.op")
    op = _OP_SYMBOLS.get(op, op)
    if op in COMPARE_OPS:
        _keys(obj, ("field", "op", "value"), path, ("value",))
        return Compare(field, cast(CompareOp, op), _value(obj["value"], f"{path}.value"))
    if op in ("in", "not_in"):
        _keys(obj, ("field", "op", "values"), path, ("values",))
        raw = obj["values"]
        values: tuple[Value, ...] | Param
        if isinstance(raw, str) and _PARAM.match(raw):
            values = cast(Param, _value(raw, f"{path}.values"))
        else:
            listed = _expect(raw, list, "a list of values or a $param", f"{path}.values")
            guards.check_list_size(len(listed), field, f"{path}.values")
            values = tuple(_value(v, f"{path}.values[{i}]") for i, v in enumerate(listed))
        return InList(field, values, op == "not_in")
    if op in ("is_null", "is_not_null"):
        _keys(obj, ("field", "op"), path)
        return IsNull(field, op == "is_not_null")
    raise QueryError(
        f"unknown operator {op[:20]!r}; expected one of {', '.join(COMPARE_OPS)}, in, not_in, is_null, "
        "is_not_null",
        f"{path}.op",
    )


def _time_range(node: Any, path: str) -> TimeRange:
    if isinstance(node, str):
        return cast(TimeRange, _shorthand(node, parse_text.parse_range, path))
    obj = _expect(node, dict, "a time range ('last 7 days' or {from, to})", path)
    _keys(obj, ("from", "to"), path, ("from", "to"))
    bounds = []
    for key in ("from", "to"):
        value = _value(_expect(obj[key], str, "an ISO date/time or $param", f"{path}.{key}"), f"{path}.{key}")
        bounds.append(cast(str | Param, value))
    return AbsoluteRange(bounds[0], bounds[1])


def _order(node: Any, path: str) -> tuple[OrderItem, ...]:
    items = _expect(node, list, "a list of order items", path)
    out = []
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        if isinstance(item, str):
            words = item.split()
            if item.startswith("-"):
                out.append(OrderItem(item[1:], True))
            elif len(words) == 2 and words[1].lower() in ("asc", "desc"):
                out.append(OrderItem(words[0], words[1].lower() == "desc"))
            else:
                out.append(OrderItem(item))
            continue
        obj = _expect(item, dict, "an order item", item_path)
        _keys(obj, ("by", "desc"), item_path, ("by",))
        desc = _expect(obj.get("desc", False), bool, "true or false", f"{item_path}.desc")
        out.append(OrderItem(_expect(obj["by"], str, "a column name", f"{item_path}.by"), desc))
    return tuple(out)


def _names(node: Any, what: str, path: str) -> tuple[str, ...]:
    items = _expect(node, list, f"a list of {what}", path)
    return tuple(_expect(x, str, what, f"{path}[{i}]") for i, x in enumerate(items))


def _fill(node: Any) -> bool:
    if node is None:
        return False
    if node not in ("zero", "zeros"):
        raise QueryError("fill must be 'zero' (empty time buckets as zero counts) or null", "$.fill")
    return True


def query_from(doc: Any) -> tuple[Query, Params]:
    """The query and its parameters (``params``) from a decoded document."""
    obj = _expect(doc, dict, "a query object", "$")
    _keys(obj, (*QUERY_KEYS, "params"), "$", ("time_range",))
    select = _names(obj.get("select", []), "field names", "$.select")
    if "measures" not in obj and not select:
        raise QueryError("missing key 'measures' (or 'select' to list rides)", "$")
    if "measures" in obj and select:
        raise QueryError("a query has measures (an aggregation) or select (a listing), not both", "$")
    measures = _expect(obj.get("measures", []), list, "a list of measures", "$.measures")
    dimensions = _expect(obj.get("dimensions", []), list, "a list of dimensions", "$.dimensions")
    if not select:
        guards.check_counts(len(measures), len(dimensions))
    params = _expect(obj.get("params", {}), dict, "an object of parameters", "$.params")
    limit = obj.get("limit")
    if limit is not None:
        _expect(limit, int, "an integer", "$.limit")
    compare = obj.get("compare")
    if compare is not None and compare != "previous_period":
        raise QueryError("compare must be 'previous_period' or null", "$.compare")
    cursor = obj.get("cursor")
    if cursor is not None:
        _expect(cursor, str, "a cursor (the previous page's next_cursor)", "$.cursor")
    query = Query(
        measures=tuple(_measure(m, f"$.measures[{i}]") for i, m in enumerate(measures)),
        time_range=_time_range(obj["time_range"], "$.time_range"),
        dimensions=tuple(_dimension(d, f"$.dimensions[{i}]") for i, d in enumerate(dimensions)),
        filter=None if obj.get("filter") is None else filter_from(obj["filter"], "$.filter"),
        having=None if obj.get("having") is None else filter_from(obj["having"], "$.having"),
        order=_order(obj.get("order", []), "$.order"),
        limit=limit,
        zone=_expect(obj.get("zone", Query.__dataclass_fields__["zone"].default), str, "a zone", "$.zone"),
        compare=compare,
        per=_names(obj.get("per", []), "dimension columns", "$.per"),
        fill=_fill(obj.get("fill")),
        time_field=_expect(
            obj.get("time_field", Query.__dataclass_fields__["time_field"].default),
            str,
            "a time field",
            "$.time_field",
        ),
        select=select,
        cursor=cursor,
    )
    return query, params


def parse_document(text: str | bytes) -> tuple[Query, Params]:
    return query_from(load_document(text))
