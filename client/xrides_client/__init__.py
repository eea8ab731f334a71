"""Client SDK for the XRides ride-ingestion API.

Rides go to a durable spool before ``send`` returns, travel in batches with retries and an
Idempotency-Key per request, and are followed to their final state on the platform::

    from xrides_client import Client

    with Client("http://127.0.0.1:8000", api_key, spool="rides.spool") as client:
        handle = client.send(ride)
        print(handle.wait(30).kind)  # stored | refused | failed (| accepted with track=False)
"""

from xrides_client.async_client import AsyncClient, AsyncHandle
from xrides_client.client import DEFAULT_SPOOL, Client
from xrides_client.csvfile import Unreadable, read_csv
from xrides_client.errors import ClientClosedError, ClientError, FatalError, SpoolError
from xrides_client.logs import JsonFormatter, log_json_to
from xrides_client.ndjsonfile import read_ndjson
from xrides_client.options import Options
from xrides_client.outcomes import Handle, Outcome, OutcomeKind
from xrides_client.stats import Stats
from xrides_client.transport import HttpTransport, Response, Transport, TransportError

__all__ = [
    "DEFAULT_SPOOL",
    "AsyncClient",
    "AsyncHandle",
    "Client",
    "ClientClosedError",
    "ClientError",
    "FatalError",
    "Handle",
    "HttpTransport",
    "JsonFormatter",
    "Options",
    "Outcome",
    "OutcomeKind",
    "Response",
    "SpoolError",
    "Stats",
    "Transport",
    "TransportError",
    "Unreadable",
    "log_json_to",
    "read_csv",
    "read_ndjson",
]
