"""A partition's manifest: what an archived day holds, so anyone can check it without us.

The manifest is written last, after every object it lists has been uploaded, read back and
checked; it is the commit point of a day. Objects of the day's prefix that it does not list are
leftovers of an interrupted run and are deleted by the next one (readers that go through the
manifest never see them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import orjson
import pyarrow as pa


@dataclass(frozen=True, slots=True)
class ManifestObject:
    key: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    day: date
    generation: int  # 1 for the first archive of the day, +1 for every rewrite (late data)
    rows: int
    min_booking_id: int | None
    max_booking_id: int | None
    objects: tuple[ManifestObject, ...]
    schema_version: int
    columns: tuple[dict[str, Any], ...]
    source_query: str
    source: str  # "postgres" (the day as PostgreSQL holds it) or "postgres+archive" (merged)
    created_at: str  # ISO 8601 UTC
    compression: str = "zstd"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(o.bytes for o in self.objects)

    def to_json(self) -> bytes:
        body = asdict(self)
        body["day"] = self.day.isoformat()
        return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        body = orjson.loads(raw)
        body["day"] = date.fromisoformat(body["day"])
        body["objects"] = tuple(ManifestObject(**o) for o in body["objects"])
        body["columns"] = tuple(body["columns"])
        return cls(**body)


def describe_schema(schema: pa.Schema) -> tuple[dict[str, Any], ...]:
    return tuple({"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema)
