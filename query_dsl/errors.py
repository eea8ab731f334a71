"""The query DSL's errors, all under the platform's root (:mod:`xrides.errors`).

InvalidInput
└── QueryError                 the query is wrong; ``path`` names the bad element (400)
    ├── QuerySyntaxError       the text form does not parse; ``position`` is the offset
    ├── UnknownName            a field, measure or column outside the catalog
    └── QueryLimitExceeded     a cost guard refused it (buckets, span, rows, list size, depth)
Unavailable
└── QueryBackendUnavailable    PostgreSQL, Elasticsearch or the archive did not answer (503)
XRidesError
└── QueryTimeout               the backend gave up at its time limit (504)
"""

from __future__ import annotations

from typing import Any

from xrides.errors import InvalidInput, Unavailable, XRidesError


class QueryError(InvalidInput):
    code = "invalid_query"

    def __init__(self, message: str, path: str = "", **details: Any) -> None:
        super().__init__(f"{path}: {message}" if path else message, path=path, **details)
        self.path = path


class QuerySyntaxError(QueryError):
    code = "query_syntax"


class UnknownName(QueryError):
    code = "unknown_name"


class QueryLimitExceeded(QueryError):
    code = "query_limit_exceeded"


class QueryBackendUnavailable(Unavailable):
    code = "query_backend_unavailable"


class QueryTimeout(XRidesError):
    http_status = 504
    code = "query_timeout"
