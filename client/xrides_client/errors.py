"""The client's exceptions, split by who has to act.

    ClientError              root: everything this package raises on purpose
    ├── ClientClosedError    the caller used a closed client, or waited on a ride the client
    │                        stopped before finishing (the ride is still in the spool)
    ├── FatalError           the API refused the client itself (401/403, or the URL serves no ride
    │                        API); every pending ride failed with this reason and ``send`` raises it
    └── SpoolError           the spool file cannot be used (another client holds it, or it is corrupt)

A refused or failed *ride* is not an exception: it is an :class:`~xrides_client.Outcome`, because
one bad ride among thousands must not stop the others.
"""

from __future__ import annotations


class ClientError(Exception):
    """Root of every error this package raises on purpose."""


class ClientClosedError(ClientError):
    pass


class FatalError(ClientError):
    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


class SpoolError(ClientError):
    pass
