-- The archiver's bookkeeping. The S3 manifests are the truth about what is archived; these rows
-- mirror them for SQL (reconciliation, metrics) and hold the archiver's own watermark.

CREATE TABLE archive_days (
    day date PRIMARY KEY,                  -- UTC pickup day
    generation integer NOT NULL,           -- 1 = first archive, +1 per rewrite (late data)
    rows bigint NOT NULL,
    bytes bigint NOT NULL,
    manifest_key text NOT NULL,
    manifest_sha256 text NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    es_index_deleted_at timestamptz
);

-- name = 'late_checked_at': receipts stored after this moment (minus a margin) are checked for
-- rides that landed in days already archived.
CREATE TABLE archive_state (
    name text PRIMARY KEY,
    at timestamptz NOT NULL
);

-- Monthly partitions dropped by the optional PostgreSQL retention. A late ride for such a month
-- recreates the partition with only the late rows, so its day is merged with the archive instead
-- of rewritten from PostgreSQL alone.
CREATE TABLE archive_dropped_months (
    month date PRIMARY KEY,
    rows bigint NOT NULL,
    dropped_at timestamptz NOT NULL DEFAULT now()
);
