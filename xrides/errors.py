"""The platform's one exception tree.

    XRidesError                      root: everything the platform raises on purpose
    ├── InvalidInput                 the caller sent something wrong (HTTP 4xx)
    │   ├── RideValidationError      a ride broke the contract; carries every FieldError
    │   ├── MalformedBody            not JSON / not UTF-8 / wrong shape (400)
    │   ├── UnsupportedMediaType     wrong Content-Type (415)
    │   ├── PayloadTooLarge          over the byte or item limit (413)
    │   ├── Unauthorized             no or unknown API key (401)
    │   ├── Forbidden                key without the needed scope (403)
    │   ├── NotFound                 unknown request id / booking (404)
    │   └── IdempotencyConflict      same Idempotency-Key, different body (409)
    └── Unavailable                  we cannot take the work now; retry later (503/429)
        ├── BrokerUnavailable        Kafka did not acknowledge in time (or is not reachable)
        │   └── DeliveryAbandoned    a stop came before Kafka acknowledged every dead letter
        ├── SinkUnavailable          a worker's store (PostgreSQL, Elasticsearch) is away: retry the batch
        ├── Overloaded               too many requests in flight
        └── RateLimited              the client's own rate limit

Each class carries its HTTP status and whether a retry can succeed (``retriable``) as data,
so the API maps errors to responses in exactly one place.
"""

from __future__ import annotations

from typing import Any, ClassVar


class XRidesError(Exception):
    """Root of every error the platform raises on purpose."""

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(XRidesError):
    http_status = 400
    code = "invalid_input"


class MalformedBody(InvalidInput):
    code = "malformed_body"


class UnsupportedMediaType(InvalidInput):
    http_status = 415
    code = "unsupported_media_type"


class PayloadTooLarge(InvalidInput):
    http_status = 413
    code = "payload_too_large"


class Unauthorized(InvalidInput):
    http_status = 401
    code = "unauthorized"


class Forbidden(InvalidInput):
    http_status = 403
    code = "forbidden"


class NotFound(InvalidInput):
    http_status = 404
    code = "not_found"


class IdempotencyConflict(InvalidInput):
    http_status = 409
    code = "idempotency_conflict"


class Unavailable(XRidesError):
    http_status = 503
    code = "unavailable"
    retriable = True

    def __init__(self, message: str, retry_after_s: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class BrokerUnavailable(Unavailable):
    code = "broker_unavailable"


class DeliveryAbandoned(BrokerUnavailable):
    code = "delivery_abandoned"


class SinkUnavailable(Unavailable):
    code = "sink_unavailable"


class Overloaded(Unavailable):
    code = "overloaded"


class RateLimited(Unavailable):
    http_status = 429
    code = "rate_limited"
