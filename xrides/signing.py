"""Optional HMAC request signing: a key with a signing secret may (or, with ``signing=required``,
must) sign each request; a signature is good once, within a window around its timestamp.

    X-XRides-Timestamp: <Unix seconds>
    X-XRides-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<METHOD>.<path?query>." + body)>

The path is the request target as sent (with its query string); the body is the raw bytes. Every
comparison is constant-time; a refusal says which rule failed, never the expected value. The
replay memory is per API process: behind several replicas a replay could reach another one within
the window (docs/security.md says how to close that gap). Shared by the ingest API and the query
service: the API checks a signed query before proxying it, and the query service checks it again
(its own replay memory sees it once).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable

from xrides.auth import ApiKey
from xrides.errors import Overloaded, Unauthorized

TIMESTAMP_HEADER = "X-XRides-Timestamp"
SIGNATURE_HEADER = "X-XRides-Signature"


def signature(secret: bytes, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The ``v1`` value a client sends (hex), for ``timestamp.METHOD.path.body``."""
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _uncounted(_: str) -> None:
    return None


class SignatureChecker:
    def __init__(
        self,
        window_s: float = 300.0,
        max_remembered: int = 1_000_000,
        clock: Callable[[], float] = time.time,
        on_failure: Callable[[str], None] = _uncounted,  # counts a refusal by its reason
    ) -> None:
        self.on_failure = on_failure
        self.window_s = window_s
        self.max_remembered = max_remembered
        self._clock = clock
        # (key id, signature) -> forget after. Entries are added in clock order with the same
        # lifetime, so the oldest are always first and expiry is a walk from the front.
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def _refuse(self, reason: str, message: str) -> Unauthorized:
        self.on_failure(reason)
        return Unauthorized(message)

    def _forget_expired(self, now: float) -> None:
        while self._seen:
            first, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[first]

    def check(
        self, key: ApiKey, method: str, path: str, body: bytes, timestamp: str | None, sent: str | None
    ) -> None:
        """Accept the request or raise 401 (503 when the replay memory is full)."""
        if not timestamp and not sent:
            if key.signing_required:
                raise self._refuse("missing", f"this API key requires signed requests ({SIGNATURE_HEADER})")
            return
        if not key.signing_secret:
            raise self._refuse("malformed", "the request is signed but this API key has no signing secret")
        if not timestamp or not sent:
            raise self._refuse("malformed", f"send both {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise self._refuse("malformed", f"{TIMESTAMP_HEADER} must be Unix seconds")
        now = self._clock()
        if abs(now - int(timestamp)) > self.window_s:
            raise self._refuse(
                "expired", f"{TIMESTAMP_HEADER} is more than {self.window_s:g} s from the server's clock"
            )
        expected = signature(key.signing_secret, timestamp, method, path, body)
        offered = [p.strip()[3:] for p in sent.split(",") if p.strip().startswith("v1=")]
        if not offered:
            raise self._refuse("malformed", f"{SIGNATURE_HEADER} must be v1=<hex HMAC-SHA256>")
        matched = False
        for value in offered:  # every offer is compared, each in constant time
            matched |= hmac.compare_digest(expected.encode(), value.lower().encode())
        if not matched:
            raise self._refuse("mismatch", "the request signature does not match")
        self._forget_expired(now)
        seen = (key.key_id, expected)
        if seen in self._seen:
            raise self._refuse("replayed", "this signed request was already received; sign each request anew")
        if len(self._seen) >= self.max_remembered:
            raise Overloaded("too many signed requests to remember for replay protection", retry_after_s=1)
        # A timestamp may be up to window_s ahead, so its signature stays valid for 2 windows.
        self._seen[seen] = now + 2 * self.window_s
