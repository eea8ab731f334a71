"""The archive's contract: where days live in the bucket, their manifests and their Parquet schema.

The archiver writes it; reconcile, the query DSL's archive engine and erasure read it, so it lives
in the core, not in the archiver.
"""
