"""API keys: stored as SHA-256 hashes, compared in constant time, never logged. Shared by the two
processes that take API keys (the ingest API and the query service), so a key means the same in both.

Keys are random 256-bit tokens, so a fast hash is enough (no password stretching needed): the
server keeps only ``sha256(key)``. A key carries scopes: ``ingest`` (POST rides), ``query`` (the
query DSL and tracking reads), ``admin``. Several keys may share scopes, which is how a key is
rotated without downtime: add the new one, move clients, remove the old one. Keys listed in the
keys file (``XRIDES_API_KEYS_FILE``) are reloaded when the file changes or on SIGHUP, so both steps
happen without a restart (docs/security.md).

One entry: ``id:scope+scope:sha256hex`` then optional ``:name=value`` parts:

- ``secret=<token>``: the key's HMAC signing secret (xrides/signing.py);
- ``signing=required``: unsigned requests with this key are refused;
- ``rate=<rides/s>`` and ``burst=<rides>``: this key's own rate limit instead of the default;
- ``fields=strict``: rides with a field the contract does not know are refused (by default such
  fields are kept with the ride and named in the answer's warnings).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from xrides.errors import Forbidden, Unauthorized, XRidesError

log = logging.getLogger("xrides.auth")

ALL_SCOPES = frozenset({"ingest", "query", "admin"})


class KeySetError(XRidesError):
    """A key entry could not be read. The message names where, never the entry's text."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str  # a label safe to log and to use as a rate-limit bucket; never the secret
    sha256: bytes
    scopes: frozenset[str]
    signing_secret: bytes = field(default=b"", repr=False)
    signing_required: bool = False
    rate_per_s: float | None = None
    burst: float | None = None
    strict_fields: bool = False  # refuse unknown fields instead of keeping them


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _number(value: str, where: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise KeySetError(f"{where}: {name} must be a positive number")
    return number


def parse_entry(entry: str, where: str) -> ApiKey:
    """One ``id:scopes:sha256hex[:name=value...]`` entry; errors name ``where``, never the text."""
    parts = entry.split(":")
    if len(parts) < 3:
        raise KeySetError(f"{where}: expected id:scope+scope:sha256hex[:name=value...]")
    key_id, scope_text, digest = parts[:3]
    try:
        sha256 = bytes.fromhex(digest)
    except ValueError:
        sha256 = b""
    if not key_id or len(sha256) != 32:
        raise KeySetError(f"{where}: needs an id and a 64-digit hex SHA-256 of the key")
    scopes = frozenset(scope_text.split("+")) & ALL_SCOPES
    options: dict[str, str] = {}
    for part in parts[3:]:
        name, sep, value = part.partition("=")
        if not sep or name not in ("secret", "signing", "rate", "burst", "fields") or not value:
            raise KeySetError(
                f"{where}: options are secret=, signing=required|optional, rate=, burst=, fields=strict|keep"
            )
        options[name] = value
    signing = options.get("signing", "optional")
    if signing not in ("required", "optional"):
        raise KeySetError(f"{where}: signing must be required or optional")
    if options.get("fields", "keep") not in ("strict", "keep"):
        raise KeySetError(f"{where}: fields must be strict or keep")
    secret = options.get("secret", "")
    if signing == "required" and not secret:
        raise KeySetError(f"{where}: signing=required needs a secret=")
    return ApiKey(
        key_id,
        sha256,
        scopes,
        signing_secret=secret.encode(),
        signing_required=signing == "required",
        rate_per_s=_number(options["rate"], where, "rate") if "rate" in options else None,
        burst=_number(options["burst"], where, "burst") if "burst" in options else None,
        strict_fields=options.get("fields") == "strict",
    )


def parse_key_hashes(spec: str) -> list[ApiKey]:
    """Entries separated by commas (the ``XRIDES_API_KEY_HASHES`` setting)."""
    entries = filter(None, (part.strip() for part in spec.split(",")))
    return [parse_entry(entry, f"XRIDES_API_KEY_HASHES entry {n}") for n, entry in enumerate(entries, 1)]


def parse_key_file(text: str, name: str) -> list[ApiKey]:
    """One entry per line; blank lines and ``#`` comments are skipped. Ids must be unique."""
    keys: list[ApiKey] = []
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            keys.append(parse_entry(line, f"{name} line {line_no}"))
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        raise KeySetError(f"{name}: a key id is listed twice")
    return keys


def _ignore(_: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class KeyRingHooks:
    """What a process counts about its keys (each names its own metrics)."""

    count: Callable[[int], None] = _ignore  # the keys accepted now
    reloaded: Callable[[str], None] = _ignore  # a reload of the keys file: "ok" or "failed"


class KeyRing:
    """The keys a process accepts: fixed ones from settings, plus the keys file's current content."""

    def __init__(self, keys: list[ApiKey], keys_file: str = "", hooks: KeyRingHooks | None = None) -> None:
        self.hooks = hooks or KeyRingHooks()
        self._static = keys
        self._file_keys: list[ApiKey] = []
        self._file = Path(keys_file) if keys_file else None
        self._seen: tuple[int, int, int] | None = None
        if self._file is not None:
            self._load(self._file)  # at start a bad file is an error, not an empty key set
        self.hooks.count(len(self._static) + len(self._file_keys))

    @classmethod
    def from_settings(
        cls, key_hashes: str, dev_key: str, keys_file: str = "", hooks: KeyRingHooks | None = None
    ) -> Self:
        keys = parse_key_hashes(key_hashes)
        if dev_key:
            keys.append(ApiKey("dev", hashlib.sha256(dev_key.encode()).digest(), ALL_SCOPES))
        return cls(keys, keys_file, hooks)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int]:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self, path: Path) -> None:
        stamp = self._stamp(path)
        self._file_keys = parse_key_file(path.read_text(encoding="utf-8"), path.name)
        self._seen = stamp

    def reload(self, force: bool = False) -> bool:
        """Re-read the keys file if it changed (or ``force``); True when the key set was replaced.

        A file that cannot be read or parsed leaves the current keys in place: a typo during a
        rotation must not lock every client out.
        """
        if self._file is None:
            return False
        try:
            if not force and self._stamp(self._file) == self._seen:
                return False
            self._load(self._file)
        except (OSError, UnicodeDecodeError, KeySetError) as exc:
            self.hooks.reloaded("failed")
            detail = exc.message if isinstance(exc, KeySetError) else type(exc).__name__
            log.error(  # noqa: TRY400 - the reason is the message; a traceback adds nothing
                "API keys file not reloaded; the previous keys stay", extra={"error.message": detail}
            )
            return False
        self.hooks.reloaded("ok")
        self.hooks.count(len(self._static) + len(self._file_keys))
        log.info("API keys reloaded", extra={"keys": [k.key_id for k in self._file_keys]})
        return True

    def authenticate(self, authorization: str | None, scopes: tuple[str, ...]) -> ApiKey:
        """Return the key for a ``Bearer`` header holding one of ``scopes``, or raise 401/403."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        found: ApiKey | None = None
        for key in (*self._static, *self._file_keys):  # every key is compared: timing says nothing
            if hmac.compare_digest(digest, key.sha256):
                found = key
        if found is None:
            raise Unauthorized("unknown API key")
        if found.scopes.isdisjoint(scopes):
            raise Forbidden(f"this API key lacks the {' or '.join(scopes)} scope")
        return found
