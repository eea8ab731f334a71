"""The archive bucket: objects under ``<prefix>/dt=YYYY-MM-DD/`` and their manifests.

boto3 is synchronous; callers run these methods in a thread. Deletes go one key at a time
because the local S3-compatible server refuses multi-object deletes of many keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

MANIFEST_NAME = "_manifest.json"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the archive lives and the key pair that reaches it (each process has its own)."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    prefix: str = "rides"
    region: str = "us-east-1"


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    modified: float = 0.0  # seconds since the epoch


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArchiveStore:
    def __init__(self, config: StoreConfig) -> None:
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self._s3: Any = boto3.client(
            "s3",
            endpoint_url=config.endpoint,
            aws_access_key_id=config.access_key,
            aws_secret_access_key=config.secret_key,
            region_name=config.region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=120,
            ),
        )

    # -- layout ------------------------------------------------------------------------------------
    def day_prefix(self, day: date) -> str:
        return f"{self.prefix}/dt={day.isoformat()}/"

    def manifest_key(self, day: date) -> str:
        return self.day_prefix(day) + MANIFEST_NAME

    def data_key(self, day: date, generation: int, part: int) -> str:
        return f"{self.day_prefix(day)}part-g{generation:05d}-{part:05d}.parquet"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- objects -----------------------------------------------------------------------------------
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            Metadata={"sha256": sha256_hex(data)},
        )

    def get(self, key: str) -> bytes | None:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        body: bytes = response["Body"].read()
        return body

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def objects(self, prefix: str) -> list[StoredObject]:
        out: list[StoredObject] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            out.extend(
                StoredObject(o["Key"], int(o["Size"]), o["LastModified"].timestamp())
                for o in page.get("Contents", [])
            )
        return out

    def days(self) -> list[date]:
        """Every ``dt=`` partition that has at least one object."""
        found: list[date] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/", Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(self.prefix) + 1 :].rstrip("/")
                if name.startswith("dt="):
                    try:
                        found.append(date.fromisoformat(name[3:]))
                    except ValueError:
                        continue  # not ours
        return sorted(found)
