"""The API's keys: the key ring both key-taking processes share (:mod:`xrides.auth`: the entry format,
scopes, rotation through the keys file), counted in the API's own metrics."""

from __future__ import annotations

from ingest_service.metrics import API_KEYS, KEY_RELOADS
from xrides.auth import (
    ALL_SCOPES,
    ApiKey,
    KeyRingHooks,
    KeySetError,
    hash_key,
    parse_entry,
    parse_key_file,
    parse_key_hashes,
)
from xrides.auth import KeyRing as SharedKeyRing

API_HOOKS = KeyRingHooks(count=API_KEYS.set, reloaded=lambda outcome: KEY_RELOADS.labels(outcome).inc())


class KeyRing(SharedKeyRing):
    """The shared key ring with the API's ``xrides_api_keys`` and ``xrides_api_key_reloads_total``."""

    def __init__(self, keys: list[ApiKey], keys_file: str = "", hooks: KeyRingHooks | None = None) -> None:
        super().__init__(keys, keys_file, hooks or API_HOOKS)


__all__ = [
    "ALL_SCOPES",
    "ApiKey",
    "KeyRing",
    "KeySetError",
    "hash_key",
    "parse_entry",
    "parse_key_file",
    "parse_key_hashes",
]
