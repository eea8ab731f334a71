"""The archiver: pickup days past the hot window go from PostgreSQL to S3 as Parquet, verified,
before they leave Elasticsearch; ``verify`` and ``restore`` for auditors and operators.

Layout: ``s3://<bucket>/<archive_prefix>/dt=YYYY-MM-DD/part-gGGGGG-NNNNN.parquet`` plus that
partition's ``_manifest.json`` (see :mod:`archiver.manifest`); days are UTC days. The algorithm and
its crash safety are described in :mod:`archiver.archive` and ``docs/archiver.md``.
"""

from archiver.archive import ArchiveCorrupt, Archiver, ArchiverBusy, DayOutcome, RunReport
from archiver.settings import ArchiverSettings
from xrides.archive.manifest import Manifest, ManifestObject
from xrides.archive.schema import archive_schema

__all__ = [
    "ArchiveCorrupt",
    "Archiver",
    "ArchiverBusy",
    "ArchiverSettings",
    "DayOutcome",
    "Manifest",
    "ManifestObject",
    "RunReport",
    "archive_schema",
]
