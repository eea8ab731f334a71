"""No secret in logs, metrics or error responses: after authenticated traffic (wrong keys and failed
signatures included), every platform log under ``.stack/logs`` and in Elasticsearch's ``logs-*``,
every platform process's ``/metrics`` and every response body is searched for the stack's secrets
and the test's own.

A secret is searched as it is (API keys, HMAC secrets, role passwords, the S3 secret key); one too
short to be told from ordinary words (the local owner's password is ``xrides``) is searched in the
form it would leak in, a DSN's ``:<password>@``. A failure names the secret, never prints it.
"""

from __future__ import annotations

import base64
import os
import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from deploy.stack.platform import REGISTRY
from ingest_service.auth import hash_key
from ingest_service.signing import signature
from xrides.ride import example_ride

from conftest import REPO, PlatformProcess

pytestmark = pytest.mark.integration

StartApi = Callable[..., tuple[str, PlatformProcess]]


def stack_secrets(env: dict[str, str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name in ("XRIDES_API_KEY", "XRIDES_S3_SECRET_KEY"):
        found[name] = env[name].encode()
    for name, value in env.items():
        if name.startswith("XRIDES_PG_") and name.endswith("_PASSWORD"):
            found[name] = value.encode()
        if name.startswith("XRIDES_PG_") and name.endswith("_DSN"):
            password = urlsplit(value).password or ""
            found[name + " password"] = (password if len(password) >= 12 else f":{password}@").encode()
    return found


def leaks(where: str, data: bytes, wanted: dict[str, bytes]) -> list[str]:
    return [f"{name} in {where}" for name, secret in wanted.items() if secret and secret in data]


def new_ride() -> dict[str, object]:
    return {**example_ride(), "booking_id": random.randint(10**12, 2 * 10**12)}


async def test_no_secret_in_logs_metrics_or_error_responses(
    start_api: StartApi, stack_env: dict[str, str], tmp_path: Path
) -> None:
    wanted = stack_secrets(stack_env)
    api_key = stack_env["XRIDES_API_KEY"]
    signer, signer_secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    wanted |= {"test signing key": signer.encode(), "test signing secret": signer_secret.encode()}
    keys = tmp_path / "api-keys"
    keys.write_text(f"signer:ingest+query:{hash_key(signer)}:secret={signer_secret}:signing=required\n")
    signing_base, signing_api = start_api(api_keys_file=str(keys), pg_dsn=stack_env["XRIDES_PG_READER_DSN"])
    stack_base = stack_env.get("XRIDES_API_URL", "http://127.0.0.1:8000")
    bodies: list[tuple[str, bytes]] = []

    async def call(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, headers=headers, data=body) as response,
        ):
            where = f"{method} {url.partition('?')[0]} -> {response.status}"
            bodies.append((where, await response.read()))
            bodies.append((f"headers of {where}", str(dict(response.headers)).encode()))
            return response.status

    ride = orjson.dumps(new_ride())
    json_type = {"Content-Type": "application/json"}
    good = {"Authorization": f"Bearer {api_key}", **json_type}
    assert await call("POST", stack_base + "/v1/rides", good, ride) == 202
    query = orjson.dumps({"measures": ["count"], "time_range": "last 7 days"})
    assert await call("POST", stack_base + "/v1/query?backend=postgres", good, query) == 200
    await call("GET", stack_base + "/v1/health", {})
    wrong_keys = {
        "reversed key": {"Authorization": f"Bearer {api_key[::-1]}"},
        "key plus a character": {"Authorization": f"Bearer {api_key}x"},
        "basic scheme": {"Authorization": "Basic " + base64.b64encode(f"u:{api_key}".encode()).decode()},
        "no scheme": {"Authorization": api_key},
        "another header": {"X-Api-Key": api_key},
    }
    for headers in wrong_keys.values():
        assert await call("POST", stack_base + "/v1/rides", {**headers, **json_type}, ride) == 401
    assert await call("GET", f"{stack_base}/v1/rides/1?api_key={api_key}", {}) == 401
    # HMAC failures on an API whose key requires signing: wrong secret, replay, late, unsigned.
    stamp = str(int(time.time()))
    sig = "v1=" + signature(signer_secret.encode(), stamp, "POST", "/v1/rides", ride)
    signed = {"Authorization": f"Bearer {signer}", "X-XRides-Timestamp": stamp, "X-XRides-Signature": sig}
    assert await call("POST", signing_base + "/v1/rides", {**signed, **json_type}, ride) == 202
    assert await call("POST", signing_base + "/v1/rides", {**signed, **json_type}, ride) == 401  # replayed
    forged = {**signed, "X-XRides-Signature": "v1=" + signature(b"guess", stamp, "POST", "/v1/rides", ride)}
    assert await call("POST", signing_base + "/v1/rides", {**forged, **json_type}, ride) == 401
    late = str(int(time.time()) - 3600)
    old_sig = "v1=" + signature(signer_secret.encode(), late, "POST", "/v1/rides", ride)
    stale = {**signed, "X-XRides-Timestamp": late, "X-XRides-Signature": old_sig}
    assert await call("POST", signing_base + "/v1/rides", {**stale, **json_type}, ride) == 401
    unsigned = {"Authorization": f"Bearer {signer}", **json_type}
    assert await call("POST", signing_base + "/v1/rides", unsigned, ride) == 401
    assert (
        await call(
            "POST", signing_base + "/v1/rides", {**good, "Authorization": f"Bearer {signer_secret}"}, ride
        )
        == 401
    )

    problems: list[str] = []
    for where, body in bodies:
        problems += leaks(f"response {where}", body, wanted)
    async with aiohttp.ClientSession() as session:
        targets = {p.name: f"http://{p.metrics_target}/metrics" for p in REGISTRY}
        targets["signing test API"] = signing_base + "/metrics"
        for name, url in targets.items():
            async with session.get(url) as response:
                assert response.status == 200, name
                problems += leaks(f"/metrics of {name}", await response.read(), wanted)
        # Logs shipped to Elasticsearch (xrides/logs.py -> topic logs -> logs-*), where that runs.
        es = stack_env.get("XRIDES_ES_URL", "http://127.0.0.1:19200")
        search = {"size": 10000, "sort": [{"@timestamp": {"order": "desc", "unmapped_type": "date"}}]}
        url = es + "/logs-*/_search?ignore_unavailable=true&allow_no_indices=true"
        async with session.post(url, json=search) as response:
            assert response.status == 200
            problems += leaks("Elasticsearch logs-*", await response.read(), wanted)
    stack_dir = Path(os.environ.get("XRIDES_STACK_DIR", REPO / ".stack"))
    logs = [p for p in (stack_dir / "logs").rglob("*") if p.is_file()]
    assert {f"{p.name}.log" for p in REGISTRY} <= {p.name for p in logs}
    for path in [*logs, signing_api.log_path]:
        problems += leaks(str(path), path.read_bytes(), wanted)
    assert not problems, "secrets found: " + "; ".join(problems)
