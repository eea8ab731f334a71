"""Settings as value objects, read from ``XRIDES_*`` environment variables in ``main()``.

Each process declares one frozen dataclass whose fields carry their defaults (the local stack's
addresses, so everything works after ``make up`` with no configuration). :func:`load_settings`
fills it from the environment, converting by the field's annotation. Nothing is read at import time.
Fields listed in ``SECRETS`` are masked by :func:`describe`, which is what processes log at start.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

from xrides.errors import XRidesError

PREFIX = "XRIDES_"

T = TypeVar("T")


class SettingsError(XRidesError):
    """An environment variable could not be read as its setting's type."""


_BOOLS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _convert(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is bool:
            return _BOOLS[raw.lower()]
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind == tuple[str, ...]:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except (KeyError, ValueError) as exc:
        raise SettingsError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw


def load_settings(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from ``XRIDES_<FIELD>`` variables; absent variables keep the defaults."""
    env = os.environ if environ is None else environ
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        raw = env.get(PREFIX + field.name.upper())
        if raw is not None:
            values[field.name] = _convert(field.name, raw, hints[field.name])
    return cls(**values)


def describe(settings: object) -> dict[str, Any]:
    """The settings as a dict fit for a log line: secrets masked, DSN passwords hidden."""
    secrets: tuple[str, ...] = getattr(settings, "SECRETS", ())
    out: dict[str, Any] = {}
    for field in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, field.name)
        if field.name in secrets and value:
            value = "***"
        elif isinstance(value, str) and "://" in value and "@" in value:
            scheme, rest = value.split("://", 1)
            creds, host = rest.rsplit("@", 1)
            value = f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
        out[field.name] = value
    return out
