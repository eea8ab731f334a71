-- Least-privilege login roles (docs/security.md). The tables stay owned by the role that runs the
-- migrations, so no platform process can DROP, ALTER or TRUNCATE them:
--   xrides_writer    the persister: inserts and upserts rides, receipts, dead letters, offsets
--   xrides_reader    the API's tracking reads and query DSL, reconcile: SELECT only
--   xrides_archiver  the archiver: reads rides, keeps its own bookkeeping tables, and (optional
--                    retention) drops archived months through drop_ride_partition() only
-- Passwords are not here: `persister migrate` sets them from its settings, as SCRAM verifiers.
-- Roles belong to the cluster, not the database, so a second database migrated on the same server
-- finds them already there: every statement below is safe to run again.

DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['xrides_writer', 'xrides_reader', 'xrides_archiver'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', role_name);
        END IF;
    END LOOP;
    EXECUTE format(
        'GRANT CONNECT, TEMPORARY ON DATABASE %I TO xrides_writer, xrides_reader, xrides_archiver',
        current_database()
    );
END
$$;

-- PostgreSQL 15 already refuses CREATE in public to PUBLIC; older servers do not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO xrides_writer, xrides_reader, xrides_archiver;

-- Readers see everything, including the monthly partitions that exist now; later tables and
-- partitions (created by the owner, or by ensure_ride_partition on its behalf) get SELECT for
-- the reader and the archiver by default. Writes are granted table by table, in each migration.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO xrides_reader, xrides_archiver;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO xrides_reader, xrides_archiver;

-- The persister (persister/writer.py; `persister replay` marks dead letters replayed). DELETE on
-- cab_rides: an update that changes a ride's pickup month moves it to another partition.
GRANT SELECT, INSERT, UPDATE, DELETE ON cab_rides TO xrides_writer;
GRANT SELECT, INSERT, UPDATE ON ride_versions, consumer_offsets, cab_drivers TO xrides_writer;
GRANT SELECT, INSERT ON ride_receipts, customers TO xrides_writer;
GRANT SELECT, INSERT, UPDATE ON ingest_failures TO xrides_writer;
GRANT USAGE ON SEQUENCE ingest_failures_id_seq TO xrides_writer;
GRANT SELECT ON schema_migrations TO xrides_writer;

-- The archiver's own state (archiver/archive.py).
GRANT INSERT, UPDATE ON archive_days, archive_state, archive_dropped_months TO xrides_archiver;

-- Creating a partition needs ownership of cab_rides, which the writer must not have; rides for
-- any month can arrive (replays of old history), so the writer cannot wait for the next
-- migration. This function is the one narrow door: it runs as the owner and can only create
-- cab_rides_YYYY_MM for a month. search_path is fixed so a caller's objects cannot stand in.
CREATE OR REPLACE FUNCTION ensure_ride_partition(month_start date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first date := date_trunc('month', month_start)::date;
    name text := format('cab_rides_%s', to_char(first, 'YYYY_MM'));
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS public.%I PARTITION OF public.cab_rides FOR VALUES FROM (%L) TO (%L)',
        name,
        (first::timestamp AT TIME ZONE 'UTC'),
        ((first + interval '1 month')::timestamp AT TIME ZONE 'UTC')
    );
    EXECUTE format('GRANT SELECT ON public.%I TO xrides_reader, xrides_archiver', name);
END
$$;
REVOKE ALL ON FUNCTION ensure_ride_partition(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ensure_ride_partition(date) TO xrides_writer;

-- The archiver's optional PostgreSQL retention drops a month once every day of it is archived
-- with the row count PostgreSQL holds. Dropping needs ownership too; this function re-checks the
-- archive itself, so even a misused archiver role cannot drop a month the archive lacks.
-- Returns the rows dropped (0 when the partition does not exist).
CREATE OR REPLACE FUNCTION drop_ride_partition(month_start date) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    first date := date_trunc('month', month_start)::date;
    name text := format('cab_rides_%s', to_char(first, 'YYYY_MM'));
    unsafe bigint;
    total bigint;
BEGIN
    IF to_regclass(format('public.%I', name)) IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format(
        'SELECT count(*) FILTER (WHERE a.rows IS DISTINCT FROM c.n), coalesce(sum(c.n), 0)'
        ' FROM (SELECT (from_date AT TIME ZONE ''UTC'')::date AS day, count(*) AS n'
        '       FROM public.%I GROUP BY 1) c LEFT JOIN public.archive_days a USING (day)',
        name
    ) INTO unsafe, total;
    IF unsafe > 0 THEN
        RAISE EXCEPTION '%: % day(s) not archived with the same row count', name, unsafe
            USING ERRCODE = 'object_in_use';
    END IF;
    EXECUTE format('ALTER TABLE public.cab_rides DETACH PARTITION public.%I', name);
    EXECUTE format('DROP TABLE public.%I', name);
    RETURN total;
END
$$;
REVOKE ALL ON FUNCTION drop_ride_partition(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drop_ride_partition(date) TO xrides_archiver;
