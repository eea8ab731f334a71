"""The query service: the query DSL (``query_dsl``) as its own process, apart from the ingest API.

Queries used to run inside the API, on its small PostgreSQL pool and with DuckDB unbounded in
memory, so one heavy question could slow the acknowledgement of rides. Here they run on their own
port (9107) with their own pool (a read replica when ``XRIDES_PG_REPLICA_DSN`` is set), a bound on
concurrent queries (429 + Retry-After past it), DuckDB's memory limit, a cost check before anything
runs, and ``xrides_query_*`` metrics. The API keeps ``POST /v1/query`` and ``/v1/query/explain``
and forwards them here (``XRIDES_QUERY_URL``), so clients see no change.

    settings.py   QueryServiceSettings: the query settings plus port, keys and limits
    app.py        routes, the one error-to-HTTP mapping, the concurrency bound
    metrics.py    xrides_query_* (labels: route, backend, outcome, reason; never an id)
    cli.py        ``xrides-query`` / ``python -m query_service`` [--check]
"""
