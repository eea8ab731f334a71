"""``python -m query_dsl run | explain | validate | normalize``: the query DSL from a shell.

The query is the text form as an argument, or a file (``-f``, ``-`` for stdin) in the JSON,
YAML or text form. Settings are the ``XRIDES_*`` variables of :class:`QuerySettings`; the engine
runs in this process (cost checks and freshness included), as the query service runs it. A table
says which engine answered, how fresh it is and, for a listing, how to get the next page.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import io
import json
import sys
from datetime import UTC, datetime
from typing import Any

from query_dsl.backends import BACKENDS, QueryEngine
from query_dsl.errors import QueryError
from query_dsl.normalize import canonical_text
from query_dsl.parse_json import Params, parse_document
from query_dsl.parse_text import parse_query
from query_dsl.plan import Plan, plan_query
from query_dsl.result import Result
from query_dsl.settings import QuerySettings
from xrides.errors import XRidesError
from xrides.settings import load_settings


def _read_query(args: argparse.Namespace) -> tuple[Any, Params]:
    if args.file:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()  # noqa: SIM115
        looks_structured = text.lstrip().startswith("{") or args.file.endswith((".json", ".yaml", ".yml"))
        if looks_structured:
            return parse_document(text)
        return parse_query(text.strip()), {}
    if not args.query:
        raise QueryError("give a query (text form) or -f FILE")
    return parse_query(args.query), {}


def _params(pairs: list[str]) -> Params:
    out: Params = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise QueryError(f"--param takes name=value, not {pair!r}")
        try:
            out[name.removeprefix("$")] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.removeprefix("$")] = raw
    return out


def _plan(args: argparse.Namespace, settings: QuerySettings) -> tuple[Plan, datetime]:
    query, params = _read_query(args)
    params.update(_params(args.param))
    if args.cursor:
        query = dataclasses.replace(query, cursor=args.cursor)
    now = datetime.fromisoformat(args.now).astimezone(UTC) if args.now else datetime.now(UTC)
    return plan_query(query, params, now, settings.limits), now


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render(result: Result, fmt: str) -> str:
    names = [c.name + ("" if c.exact else " (~)") for c in result.columns]
    if fmt == "json":
        return json.dumps(result.as_dict(), indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([c.name for c in result.columns])
        writer.writerows(result.rows)
        return buffer.getvalue()
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    lines = [
        f"backend: {result.backend} ({result.backend_reason}); range: {result.range.as_dict()}",
        "  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"({len(cells)} rows, {result.elapsed_ms:.0f} ms)")
    if result.next_cursor:
        lines.append(f"next page: -c {result.next_cursor}")
    if result.freshness:
        lines.append(f"freshness: {result.freshness}")
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


async def _run(plan: Plan, backend: str, now: datetime, settings: QuerySettings) -> Result:
    engine = QueryEngine(settings)
    try:
        return await engine.run(plan, backend, now)
    finally:
        await engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m query_dsl", description=__doc__)
    parser.add_argument("command", choices=("run", "explain", "validate", "normalize"))
    parser.add_argument("query", nargs="?", help="the query in the text form")
    parser.add_argument("-f", "--file", help="a query file (JSON, YAML or text); - reads stdin")
    parser.add_argument("-b", "--backend", default="auto", choices=BACKENDS)
    parser.add_argument("-p", "--param", action="append", default=[], help="name=value (JSON or a string)")
    parser.add_argument("-o", "--format", default="table", choices=("table", "csv", "json"))
    parser.add_argument("--now", help="resolve relative ranges at this ISO 8601 instant")
    parser.add_argument("-c", "--cursor", help="a listing's next page (the next_cursor it printed)")
    args = parser.parse_intermixed_args(argv)
    settings = load_settings(QuerySettings)
    try:
        if args.command == "normalize":
            query, params = _read_query(args)
            params.update(_params(args.param))
            print(canonical_text(query, params or None))
            return 0
        plan, now = _plan(args, settings)
        if args.command == "validate":
            print(f"valid: {len(plan.columns)} columns, range {plan.range.as_dict()}")
            return 0
        if args.command == "explain":
            print(json.dumps(QueryEngine(settings).explain(plan, args.backend, now), indent=2))
            return 0
        print(render(asyncio.run(_run(plan, args.backend, now, settings)), args.format))
    except XRidesError as error:
        print(f"error ({error.code}): {error.message}", file=sys.stderr)
        return 2
    return 0
