-- What the API processes share when several run behind a balancer (the cluster profile,
-- XRIDES_SHARED_LIMITS=postgres): the answers given to Idempotency-Keys, and the per-key token
-- buckets of the rate limit. A retry that lands on another process finds the first answer here;
-- a client spread over two processes spends one bucket (ingest_service/shared.py).
--
-- The API logs in as xrides_reader, which may not write any table. These functions are its one
-- narrow door (as ensure_ride_partition is the writer's): they run as the owner and touch only
-- these two tables.

CREATE TABLE api_idempotency (
    client text NOT NULL,             -- the API key's id
    key text NOT NULL,                -- the Idempotency-Key header (at most 200 characters)
    body_hash bytea NOT NULL,         -- sha256 of the body: the same key with another body is a 409
    status integer,                   -- null while the first request is in progress
    body bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client, key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);

-- Unlogged: buckets are not worth a WAL write per request; after a crash they restart full.
CREATE UNLOGGED TABLE api_rate_buckets (
    client text PRIMARY KEY,
    tokens double precision NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Claim a key, or read the answer already there. A claim older than p_ttl_s has expired and is
-- taken; so is one still in progress after p_stale_s with the same body (its process died before
-- answering: the retry runs it again, which is what a retry after a crash must do).
CREATE OR REPLACE FUNCTION api_idempotency_begin(
    p_client text, p_key text, p_hash bytea, p_ttl_s double precision, p_stale_s double precision
) RETURNS TABLE (claimed boolean, body_hash bytea, status integer, body bytea)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    INSERT INTO api_idempotency AS i (client, key, body_hash, created_at)
    VALUES (p_client, p_key, p_hash, clock_timestamp())
    ON CONFLICT (client, key) DO UPDATE
        SET body_hash = excluded.body_hash, status = NULL, body = NULL, created_at = excluded.created_at
        WHERE i.created_at < clock_timestamp() - make_interval(secs => p_ttl_s)
           OR (i.status IS NULL AND i.body_hash = excluded.body_hash
               AND i.created_at < clock_timestamp() - make_interval(secs => p_stale_s))
    RETURNING true, i.body_hash, i.status, i.body;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, i.body_hash, i.status, i.body
        FROM api_idempotency i WHERE i.client = p_client AND i.key = p_key;
    END IF;
END
$$;

-- Record the answer (p_status not null), or release the claim so a retry runs again (null).
CREATE OR REPLACE FUNCTION api_idempotency_finish(
    p_client text, p_key text, p_hash bytea, p_status integer, p_body bytea
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF p_status IS NULL THEN
        DELETE FROM api_idempotency
        WHERE client = p_client AND key = p_key AND body_hash = p_hash AND status IS NULL;
    ELSE
        UPDATE api_idempotency SET status = p_status, body = p_body
        WHERE client = p_client AND key = p_key AND body_hash = p_hash AND status IS NULL;
    END IF;
END
$$;

-- Expired answers (run now and then by any API process); returns the rows deleted.
CREATE OR REPLACE FUNCTION api_idempotency_expire(p_ttl_s double precision) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    gone bigint;
BEGIN
    DELETE FROM api_idempotency WHERE created_at < clock_timestamp() - make_interval(secs => p_ttl_s);
    GET DIAGNOSTICS gone = ROW_COUNT;
    RETURN gone;
END
$$;

-- Take p_n tokens from a client's bucket (refilled at p_rate per second up to p_burst): the tokens
-- left, or, when there are not enough, how many are missing as a negative number (nothing taken).
CREATE OR REPLACE FUNCTION api_take_tokens(
    p_client text, p_n double precision, p_burst double precision, p_rate double precision
) RETURNS double precision
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    have double precision;
    at timestamptz := clock_timestamp();
BEGIN
    INSERT INTO api_rate_buckets AS b (client, tokens, updated_at) VALUES (p_client, p_burst, at)
    ON CONFLICT (client) DO UPDATE
        SET tokens = least(p_burst, b.tokens + greatest(0, extract(epoch FROM at - b.updated_at)) * p_rate),
            updated_at = at
    RETURNING tokens INTO have;
    IF have < p_n THEN
        RETURN have - p_n;
    END IF;
    UPDATE api_rate_buckets SET tokens = have - p_n WHERE client = p_client;
    RETURN have - p_n;
END
$$;

REVOKE ALL ON FUNCTION api_idempotency_begin(text, text, bytea, double precision, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION api_idempotency_finish(text, text, bytea, integer, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION api_idempotency_expire(double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION api_take_tokens(text, double precision, double precision, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_idempotency_begin(text, text, bytea, double precision, double precision) TO xrides_reader;
GRANT EXECUTE ON FUNCTION api_idempotency_finish(text, text, bytea, integer, bytea) TO xrides_reader;
GRANT EXECUTE ON FUNCTION api_idempotency_expire(double precision) TO xrides_reader;
GRANT EXECUTE ON FUNCTION api_take_tokens(text, double precision, double precision, double precision) TO xrides_reader;
-- The reader's default SELECT on new tables would show other clients' stored answers; not needed.
REVOKE SELECT ON api_idempotency, api_rate_buckets FROM xrides_reader, xrides_archiver;
