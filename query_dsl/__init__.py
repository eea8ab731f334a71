"""The query DSL: one safe language for ride analytics over PostgreSQL, Elasticsearch and the archive.

    text / JSON / YAML --parse--> ast.Query --plan (catalog, params, time range, guards)--> plan.Plan
        --compile_pg / compile_es / compile_duckdb--> backends.QueryEngine --> result.Result

See docs/query-dsl.md for the grammar, the catalog and worked examples.
"""

from query_dsl.backends import BACKENDS, QueryEngine
from query_dsl.errors import (
    QueryBackendUnavailable,
    QueryError,
    QueryLimitExceeded,
    QuerySyntaxError,
    QueryTimeout,
    UnknownName,
)
from query_dsl.normalize import canonical, canonical_text
from query_dsl.parse_json import load_document, parse_document, query_from
from query_dsl.parse_text import parse_query
from query_dsl.plan import Plan, plan_query
from query_dsl.result import Result
from query_dsl.settings import QuerySettings

__all__ = [
    "BACKENDS",
    "Plan",
    "QueryBackendUnavailable",
    "QueryEngine",
    "QueryError",
    "QueryLimitExceeded",
    "QuerySettings",
    "QuerySyntaxError",
    "QueryTimeout",
    "Result",
    "UnknownName",
    "canonical",
    "canonical_text",
    "load_document",
    "parse_document",
    "parse_query",
    "plan_query",
    "query_from",
]
