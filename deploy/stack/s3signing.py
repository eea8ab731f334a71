"""AWS Signature V4 for the one request the launcher makes to the S3 server.

s3proxy answers every anonymous request with 403, so a meaningful health
check (the server is up *and* accepts our credentials *and* the bucket exists)
needs a signed ``HEAD /<bucket>``. Doing that with hmac/hashlib avoids boto3,
which the launcher cannot import (it runs on the system Python).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """Derived key ``HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request")``."""
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def sign_headers(
    method: str,
    host: str,
    path: str,
    *,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    headers: Mapping[str, str] | None = None,
    payload_sha256: str = EMPTY_SHA256,
    now: datetime | None = None,
) -> dict[str, str]:
    """Headers (including ``Authorization``) that sign a query-less request."""
    when = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    date = when[:8]
    all_headers = {k.lower(): v.strip() for k, v in (headers or {}).items()}
    all_headers.update({"host": host, "x-amz-content-sha256": payload_sha256, "x-amz-date": when})
    names = sorted(all_headers)
    canonical_headers = "".join(f"{name}:{all_headers[name]}\n" for name in names)
    signed = ";".join(names)
    canonical_request = "\n".join(
        [method, quote(path, safe="/~"), "", canonical_headers, signed, payload_sha256]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", when, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )
    signature = hmac.new(
        signing_key(secret_key, date, region), to_sign.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    result = {name: all_headers[name] for name in names if name != "host"}
    result["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return result
