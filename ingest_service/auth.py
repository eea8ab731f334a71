"""API keys: stored as SHA-256 hashes, compared in constant time, never logged.

Keys are random 256-bit tokens, so a fast hash is enough (no password stretching needed): the
server keeps only ``sha256(key)``. A key carries scopes: ``ingest`` (POST rides), ``query`` (the
query DSL and tracking reads), ``admin``. Several keys may share scopes, which is how a key is
rotated without downtime: add the new one, move clients, remove the old one.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from xrides.errors import Forbidden, Unauthorized

ALL_SCOPES = frozenset({"ingest", "query", "admin"})


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str  # a label safe to log and to use as a rate-limit bucket; never the secret
    sha256: bytes
    scopes: frozenset[str]


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key_hashes(spec: str) -> list[ApiKey]:
    """Parse ``id:scope+scope:sha256hex`` entries separated by commas."""
    keys = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        key_id, scopes, digest = entry.split(":")
        keys.append(ApiKey(key_id, bytes.fromhex(digest), frozenset(scopes.split("+")) & ALL_SCOPES))
    return keys


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = keys

    @classmethod
    def from_settings(cls, key_hashes: str, dev_key: str) -> KeyRing:
        keys = parse_key_hashes(key_hashes)
        if dev_key:
            keys.append(ApiKey("dev", hashlib.sha256(dev_key.encode()).digest(), ALL_SCOPES))
        return cls(keys)

    def authenticate(self, authorization: str | None, scopes: tuple[str, ...]) -> ApiKey:
        """Return the key for a ``Bearer`` header holding one of ``scopes``, or raise 401/403."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        found: ApiKey | None = None
        for key in self._keys:  # every key is compared, so timing says nothing about which matched
            if hmac.compare_digest(digest, key.sha256):
                found = key
        if found is None:
            raise Unauthorized("unknown API key")
        if found.scopes.isdisjoint(scopes):
            raise Forbidden(f"this API key lacks the {' or '.join(scopes)} scope")
        return found
