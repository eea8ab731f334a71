"""API keys rotated without a restart, per-key rate limits, HMAC request signing, and HTTPS,
against API processes started as deployed (``python -m ingest_service``) on the real stack."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ingest_service.auth import hash_key
from ingest_service.signing import signature
from xrides.ride import example_ride

from conftest import REPO, PlatformProcess, free_port

pytestmark = pytest.mark.integration

StartApi = Callable[..., tuple[str, PlatformProcess]]


def new_ride() -> dict[str, Any]:
    return {**example_ride(), "booking_id": random.randint(10**12, 2 * 10**12)}


def write_keys(path: Path, lines: list[str]) -> None:
    """Replace the file atomically, as an operator's deploy tool (or a Kubernetes Secret) does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# test keys\n" + "\n".join(lines) + "\n")
    tmp.replace(path)


async def post_ride(session: aiohttp.ClientSession, base: str, key: str, **headers: str) -> int:
    async with session.post(
        base + "/v1/rides", json=new_ride(), headers={"Authorization": f"Bearer {key}", **headers}
    ) as response:
        await response.read()
        return response.status


async def wait_status(
    session: aiohttp.ClientSession, base: str, key: str, want: int, within_s: float
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if await post_ride(session, base, key) == want:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"the key did not answer {want} within {within_s} s")


async def test_keys_rotate_without_a_restart_while_requests_keep_flowing(
    start_api: StartApi, stack_env: dict[str, str], tmp_path: Path
) -> None:
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    keys = tmp_path / "api-keys"
    write_keys(keys, [f"client-2026-10:ingest:{hash_key(old)}"])
    base, api = start_api(
        api_keys_file=str(keys), api_keys_reload_s="0.2", pg_dsn=stack_env["XRIDES_PG_READER_DSN"]
    )
    current = {"key": old}
    flow: list[int] = []
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():  # a client that always uses the key it was last given
            flow.append(await post_ride(session, base, current["key"]))
            await asyncio.sleep(0.01)

    async with aiohttp.ClientSession() as session:
        assert await post_ride(session, base, new) == 401
        task = asyncio.create_task(client(session))
        await asyncio.sleep(0.5)
        # 1. The new key is added next to the old one: both work.
        write_keys(keys, [f"client-2026-10:ingest:{hash_key(old)}", f"client-2026-11:ingest:{hash_key(new)}"])
        assert await wait_status(session, base, new, 202, 5) < 5
        assert await post_ride(session, base, old) == 202
        # 2. The client moves to the new key; 3. the old one is removed and stops working.
        current["key"] = new
        await asyncio.sleep(0.5)
        write_keys(keys, [f"client-2026-11:ingest:{hash_key(new)}"])
        await wait_status(session, base, old, 401, 5)
        await asyncio.sleep(0.5)
        stop.set()
        await task
        assert await post_ride(session, base, new) == 202
    assert len(flow) > 20 and set(flow) == {202}, f"the flowing client saw {sorted(set(flow))}"
    assert api.proc is not None and api.proc.poll() is None  # the same process throughout
    log = api.log_path.read_text()
    assert "API keys reloaded" in log and old not in log and new not in log


async def test_sighup_reloads_the_keys_file_at_once(
    start_api: StartApi, stack_env: dict[str, str], tmp_path: Path
) -> None:
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    keys = tmp_path / "api-keys"
    write_keys(keys, [f"a:ingest:{hash_key(old)}"])
    base, api = start_api(api_keys_file=str(keys), api_keys_reload_s="3600")
    async with aiohttp.ClientSession() as session:
        write_keys(keys, [f"b:ingest:{hash_key(new)}"])
        assert await post_ride(session, base, new) == 401  # not polled for an hour...
        assert api.proc is not None
        api.proc.send_signal(signal.SIGHUP)  # ...but a SIGHUP reloads now
        await wait_status(session, base, new, 202, 3)
        assert await post_ride(session, base, old) == 401
        # A broken file is refused and the keys in force stay.
        keys.write_text("this is not a key entry\n")
        api.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert await post_ride(session, base, new) == 202
        assert api.proc.poll() is None
    assert "API keys file not reloaded" in api.log_path.read_text()


async def test_rate_limits_are_per_key(start_api: StartApi, tmp_path: Path) -> None:
    slow, fast = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    keys = tmp_path / "api-keys"
    write_keys(keys, [f"slow:ingest:{hash_key(slow)}:rate=0.5:burst=2", f"fast:ingest:{hash_key(fast)}"])
    base, _ = start_api(api_keys_file=str(keys), rate_limit_per_s="100", rate_limit_burst="100")
    async with aiohttp.ClientSession() as session:
        assert [await post_ride(session, base, slow) for _ in range(3)] == [202, 202, 429]
        # Another key is not slowed down by the first one's exhausted bucket.
        assert [await post_ride(session, base, fast) for _ in range(5)] == [202] * 5
        async with session.post(
            base + "/v1/rides", json=new_ride(), headers={"Authorization": f"Bearer {slow}"}
        ) as response:
            assert response.status == 429
            assert response.headers["RateLimit-Limit"] == "2"


def signed_headers(
    key: str, secret: str, method: str, path: str, body: bytes, ts: int | None = None
) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {
        "Authorization": f"Bearer {key}",
        "X-XRides-Timestamp": stamp,
        "X-XRides-Signature": "v1=" + signature(secret.encode(), stamp, method, path, body),
        "Content-Type": "application/json",
    }


async def test_hmac_signing_refuses_bad_late_replayed_and_unsigned_requests(
    start_api: StartApi, start_query_service: StartApi, tmp_path: Path
) -> None:
    strict, loose = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    strict_secret, loose_secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    keys = tmp_path / "api-keys"
    write_keys(
        keys,
        [
            f"strict:ingest+query:{hash_key(strict)}:secret={strict_secret}:signing=required",
            f"loose:ingest:{hash_key(loose)}:secret={loose_secret}",
        ],
    )
    # queries are forwarded to a query service, which checks the key and signature again: same keys
    query_base, _ = start_query_service(api_keys_file=str(keys))
    base, api = start_api(api_keys_file=str(keys), query_url=query_base)

    async def send(
        path: str, body: bytes, headers: dict[str, str], method: str = "POST"
    ) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, base + path, data=body or None, headers=headers) as response,
        ):
            return response.status, orjson.loads(await response.read())

    body = orjson.dumps(new_ride())
    good = signed_headers(strict, strict_secret, "POST", "/v1/rides", body)
    assert (await send("/v1/rides", body, good))[0] == 202
    status, answer = await send("/v1/rides", body, good)  # the very same request again
    assert (status, answer["error_code"]) == (401, "unauthorized") and "already received" in answer[
        "error_message"
    ]
    other = orjson.dumps(new_ride())
    tampered = signed_headers(strict, strict_secret, "POST", "/v1/rides", body)
    assert (await send("/v1/rides", other, tampered))[0] == 401  # signature of another body
    wrong_secret = signed_headers(strict, loose_secret, "POST", "/v1/rides", other)
    assert (await send("/v1/rides", other, wrong_secret))[0] == 401
    late = signed_headers(strict, strict_secret, "POST", "/v1/rides", other, ts=int(time.time()) - 301)
    status, answer = await send("/v1/rides", other, late)
    assert status == 401 and "clock" in answer["error_message"]
    unsigned = {"Authorization": f"Bearer {strict}", "Content-Type": "application/json"}
    status, answer = await send("/v1/rides", other, unsigned)
    assert status == 401 and "requires signed requests" in answer["error_message"]
    # The optional key: unsigned or correctly signed both pass; a wrong signature never does.
    assert (await send("/v1/rides", other, {**unsigned, "Authorization": f"Bearer {loose}"}))[0] == 202
    third = orjson.dumps(new_ride())
    right = signed_headers(loose, loose_secret, "POST", "/v1/rides", third)
    wrong = signed_headers(loose, strict_secret, "POST", "/v1/rides", third)
    assert (await send("/v1/rides", third, wrong))[0] == 401
    assert (await send("/v1/rides", third, right))[0] == 202
    # Reads and queries are signed too (the path includes the query string; GET has an empty body).
    get = signed_headers(strict, strict_secret, "GET", "/v1/rides/1", b"")
    assert (await send("/v1/rides/1", b"", get, "GET"))[0] in (200, 404)
    query = orjson.dumps({"measures": ["count"], "time_range": "last 7 days"})
    ok = signed_headers(strict, strict_secret, "POST", "/v1/query/explain?backend=postgres", query)
    status, answer = await send("/v1/query/explain?backend=postgres", query, ok)
    assert status == 200, answer
    moved = signed_headers(strict, strict_secret, "POST", "/v1/query/explain?backend=postgres", query)
    assert (await send("/v1/query/explain?backend=elasticsearch", query, moved))[0] == 401
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
        metrics = await response.text()
    assert 'xrides_api_signature_failures_total{reason="replayed"} 1.0' in metrics
    log = api.log_path.read_text()
    for secret in (strict, loose, strict_secret, loose_secret):
        assert secret not in log and secret not in metrics


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_the_api_serves_https_with_tls_1_2_or_newer(stack_env: dict[str, str], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        **stack_env,
        "XRIDES_API_PORT": str(port),
        "XRIDES_API_HOST": "127.0.0.1",
        "XRIDES_TLS_CERT_FILE": str(cert),
        "XRIDES_TLS_KEY_FILE": str(key),
    }
    api = PlatformProcess("ingest_service", env, tmp_path / "api-tls.log")
    api.start()
    trusted = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with session.get(base + "/readyz", ssl=trusted) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert api.proc is not None and api.proc.poll() is None, api.log_tail()
                assert time.monotonic() < deadline, api.log_tail()
                await asyncio.sleep(0.3)
            headers = {"Authorization": f"Bearer {stack_env['XRIDES_API_KEY']}"}
            async with session.post(
                base + "/v1/rides", json=new_ride(), headers=headers, ssl=trusted
            ) as response:
                assert response.status == 202
            # Plain HTTP to the TLS port gets no HTTP answer.
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    await response.read()
            # TLS 1.2 is the oldest accepted; 1.1 and older are refused.
            tls12 = ssl.create_default_context(cafile=str(cert))
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            async with session.get(base + "/healthz", ssl=tls12) as response:
                assert response.status == 200
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 constants
                old = ssl.create_default_context(cafile=str(cert))
                old.minimum_version = ssl.TLSVersion.TLSv1
                old.maximum_version = ssl.TLSVersion.TLSv1_1
            with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
                async with session.get(base + "/healthz", ssl=old) as response:
                    await response.read()
        argv = [sys.executable, "-m", "ingest_service", "--check"]
        check = await asyncio.to_thread(subprocess.run, argv, env=env, cwd=REPO, check=False)
        assert check.returncode == 0
    finally:
        api.stop()
