"""API security parts without a network: key entries and files, per-key limits, HMAC signing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest_service.auth import KeyRing, KeySetError, hash_key, parse_entry, parse_key_file
from ingest_service.limits import RateLimiter
from ingest_service.signing import SignatureChecker, signature
from xrides.errors import RateLimited, Unauthorized

SECRET = "sign-me-0123456789"


def test_key_entry_options_are_parsed() -> None:
    key = parse_entry(
        f"ci:ingest+query:{hash_key('k')}:secret={SECRET}:signing=required:rate=5:burst=10", "x"
    )
    assert key.scopes == {"ingest", "query"}
    assert key.signing_secret == SECRET.encode() and key.signing_required
    assert (key.rate_per_s, key.burst) == (5.0, 10.0)
    assert SECRET not in repr(key)


@pytest.mark.parametrize(
    "entry",
    [
        "only:two",
        f"id:ingest:{'ab' * 10}",
        f"id:ingest:{hash_key('k')}:colour=blue",
        f"id:ingest:{hash_key('k')}:signing=required",
        f"id:ingest:{hash_key('k')}:rate=-1",
    ],
)
def test_a_bad_entry_is_refused_without_echoing_it(entry: str) -> None:
    with pytest.raises(KeySetError) as info:
        parse_entry(entry, "keys line 3")
    assert info.value.message.startswith("keys line 3: ")
    assert entry not in info.value.message and hash_key("k") not in info.value.message


def test_key_file_skips_comments_and_refuses_duplicate_ids() -> None:
    text = f"# rotation 2026-11\n\nold:ingest:{hash_key('a')}\nnew:ingest:{hash_key('b')}\n"
    assert [k.key_id for k in parse_key_file(text, "keys")] == ["old", "new"]
    with pytest.raises(KeySetError):
        parse_key_file(f"a:ingest:{hash_key('a')}\na:ingest:{hash_key('b')}\n", "keys")


def test_key_file_reload_swaps_keys_and_keeps_them_when_the_new_file_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"old:ingest:{hash_key('old-key')}\n")
    ring = KeyRing.from_settings("", "", str(path))
    assert ring.authenticate("Bearer old-key", ("ingest",)).key_id == "old"
    assert ring.reload() is False  # unchanged
    tmp = tmp_path / "keys.new"
    tmp.write_text(f"old:ingest:{hash_key('old-key')}\nnew:ingest:{hash_key('new-key')}\n")
    tmp.replace(path)
    assert ring.reload() is True
    assert ring.authenticate("Bearer new-key", ("ingest",)).key_id == "new"
    path.write_text("garbage\n")
    os.utime(path, ns=(1, 1))
    assert ring.reload() is False
    assert ring.authenticate("Bearer old-key", ("ingest",)).key_id == "old"
    path.write_text(f"new:ingest:{hash_key('new-key')}\n")
    assert ring.reload(force=True) is True
    with pytest.raises(Unauthorized):
        ring.authenticate("Bearer old-key", ("ingest",))


def test_a_missing_or_bad_keys_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KeyRing.from_settings("", "", str(tmp_path / "absent"))
    (tmp_path / "bad").write_text("x\n")
    with pytest.raises(KeySetError):
        KeyRing.from_settings("", "", str(tmp_path / "bad"))


def test_rate_limits_are_per_key_with_each_keys_own_limits() -> None:
    limiter = RateLimiter(rate=1000, burst=1000)
    limiter.take("small", 3, rate=1, burst=3)
    with pytest.raises(RateLimited):
        limiter.take("small", 1, rate=1, burst=3)
    assert limiter.take("other", 500) == pytest.approx(500, abs=1)  # unaffected by "small"
    assert limiter.take("bigger", 900, rate=1, burst=2000) == pytest.approx(1100, abs=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _signed(clock: Clock, body: bytes = b'{"a":1}', path: str = "/v1/rides") -> tuple[str, str]:
    ts = str(int(clock.now))
    return ts, "v1=" + signature(SECRET.encode(), ts, "POST", path, body)


def test_signed_requests_are_accepted_once_within_the_window() -> None:
    clock = Clock()
    checker = SignatureChecker(window_s=300, clock=clock)
    key = parse_entry(f"ci:ingest:{hash_key('k')}:secret={SECRET}", "x")
    ts, sig = _signed(clock)
    checker.check(key, "POST", "/v1/rides", b'{"a":1}', ts, sig)
    with pytest.raises(Unauthorized, match="already received"):
        checker.check(key, "POST", "/v1/rides", b'{"a":1}', ts, sig)
    checker.check(key, "POST", "/v1/rides", b"", None, None)  # signing optional for this key
    clock.now += 1
    ts, sig = _signed(clock)
    with pytest.raises(Unauthorized, match="does not match"):
        checker.check(key, "POST", "/v1/rides", b'{"a":2}', ts, sig)
    with pytest.raises(Unauthorized, match="does not match"):
        checker.check(key, "POST", "/v1/rides?x=1", b'{"a":1}', ts, sig)
    clock.now += 301
    with pytest.raises(Unauthorized, match="from the server's clock"):
        checker.check(key, "POST", "/v1/rides", b'{"a":1}', ts, sig)
    for bad_ts, bad_sig in (("soon", sig), (ts, "sha1=00"), (None, sig), (ts, None)):
        with pytest.raises(Unauthorized):
            checker.check(key, "POST", "/v1/rides", b'{"a":1}', bad_ts, bad_sig)


def test_replay_memory_forgets_after_two_windows() -> None:
    clock = Clock()
    checker = SignatureChecker(window_s=300, clock=clock)
    key = parse_entry(f"ci:ingest:{hash_key('k')}:secret={SECRET}", "x")
    ts, sig = _signed(clock)
    checker.check(key, "POST", "/v1/rides", b'{"a":1}', ts, sig)
    clock.now += 601
    checker._forget_expired(clock.now)
    assert not checker._seen


def test_a_key_with_signing_required_refuses_unsigned_requests() -> None:
    checker = SignatureChecker()
    key = parse_entry(f"ci:ingest:{hash_key('k')}:secret={SECRET}:signing=required", "x")
    with pytest.raises(Unauthorized, match="requires signed requests"):
        checker.check(key, "GET", "/v1/rides/1", b"", None, None)
    plain = parse_entry(f"ci:ingest:{hash_key('k')}", "x")
    with pytest.raises(Unauthorized, match="no signing secret"):
        checker.check(plain, "GET", "/v1/rides/1", b"", "1", "v1=00")
