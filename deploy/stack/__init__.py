"""Local-stack launcher for the XRides platform.

The launcher is stdlib-only on purpose: ``make up`` runs it with the system
``python3`` before (and independently of) the project venv, so it can bring up
PostgreSQL, Kafka, Elasticsearch, an S3 server and Prometheus on a bare machine.
Run it as ``python3 -m deploy.stack up|down|status|env|logs NAME``.
"""

from deploy.stack.errors import StackError

__all__ = ["StackError"]
