"""Load saved objects into Kibana: ``POST /api/saved_objects/_import?overwrite=true``.

The request is the one Kibana's own "Import" button sends: the NDJSON as the multipart field
``file``, the ``kbn-xsrf`` header Kibana demands of every API write, basic authentication when a
user is given. Importing again replaces the objects (same ids), so the command is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from xrides.errors import XRidesError

log = logging.getLogger("dashboards.kibana_import")

RETRY_STATUSES = frozenset({502, 503, 504})  # Kibana still starting, or a proxy in front of it


class KibanaImportError(XRidesError):
    """Kibana refused the import, or some objects in it."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    success_count: int
    objects: list[dict[str, Any]]  # successResults: type, id, meta.title of each object


def import_url(base_url: str, space: str = "") -> str:
    base = base_url.rstrip("/")
    if space:
        base += f"/s/{space}"
    return f"{base}/api/saved_objects/_import?overwrite=true"


def _describe_errors(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        detail = error.get("error", {})
        parts.append(
            f"{error.get('type')}/{error.get('id')}: {detail.get('type')} {detail.get('message', '')}".strip()
        )
    return "; ".join(parts)


async def import_saved_objects(
    base_url: str,
    ndjson: bytes,
    *,
    user: str = "",
    password: str = "",
    space: str = "",
    filename: str = "xrides.ndjson",
    timeout_s: float = 60.0,
    attempts: int = 10,
    retry_delay_s: float = 3.0,
) -> ImportResult:
    """Post ``ndjson``; raises :class:`KibanaImportError` unless every object was imported."""
    url = import_url(base_url, space)
    headers = {"kbn-xsrf": "true"}
    if user:
        headers["Authorization"] = aiohttp.encode_basic_auth(user, password)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    last_problem = ""
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for attempt in range(1, attempts + 1):
            form = aiohttp.FormData()
            form.add_field("file", ndjson, filename=filename, content_type="application/ndjson")
            try:
                async with session.post(url, data=form, headers=headers) as response:
                    text = await response.text()
                    if response.status in RETRY_STATUSES:
                        last_problem = f"HTTP {response.status}: {text[:200]}"
                    elif response.status != 200:
                        raise KibanaImportError(f"{url} answered {response.status}: {text[:500]}")
                    else:
                        body = await response.json(content_type=None)
                        if not body.get("success", False):
                            raise KibanaImportError(
                                f"Kibana imported {body.get('successCount', 0)} objects and refused some: "
                                + _describe_errors(body.get("errors", []))
                            )
                        return ImportResult(
                            int(body.get("successCount", 0)), list(body.get("successResults", []))
                        )
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            log.warning("kibana not ready", extra={"attempt": attempt, "problem": last_problem})
            if attempt < attempts:
                await asyncio.sleep(retry_delay_s)
    raise KibanaImportError(f"{url} did not take the import after {attempts} attempts ({last_problem})")
