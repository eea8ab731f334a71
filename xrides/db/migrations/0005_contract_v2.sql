-- Contract 2 (xrides/ride/fields.py): what the parser learns beside the fields is stored with the
-- ride, and refused rides are kept in a quarantine instead of being forgotten.
--
-- to_date_day       a drop-off known only to the day (to_date stays null: the day is not midnight)
-- quality           the data-quality flags (xrides/ride/quality.py). Rides stored before this
--                   migration keep an empty list; their contract_version (1) says why
-- extras            unknown fields, kept as sent
-- contract_version  the contract the ride was accepted under
--
-- The field columns themselves (and from_area_id becoming nullable) are rendered from the field
-- table by migrate (xrides/db/rides.py: cab_rides_columns), not written here.

ALTER TABLE cab_rides ADD COLUMN IF NOT EXISTS to_date_day date;
ALTER TABLE cab_rides ADD COLUMN IF NOT EXISTS quality text[] NOT NULL DEFAULT '{}';
ALTER TABLE cab_rides ADD COLUMN IF NOT EXISTS extras jsonb;
ALTER TABLE cab_rides ADD COLUMN IF NOT EXISTS contract_version smallint NOT NULL DEFAULT 1;

-- One row per refused ride (the API's 422), written by the persister from the rides.refused topic:
-- its position there is its request id (q<partition>-<offset>). A replay after a contract fix
-- re-validates the body and, when it now passes, sends it through the normal path and records the
-- request id it got (replayed_as).
CREATE TABLE quarantine (
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    booking_id bigint,
    refused_at timestamptz NOT NULL,
    key_id text,
    contract_version smallint NOT NULL,
    errors jsonb NOT NULL,
    body bytea NOT NULL,
    replayed_at timestamptz,
    replayed_as text,
    last_replay_at timestamptz,
    replay_errors jsonb,
    PRIMARY KEY (kafka_partition, kafka_offset)
);
CREATE INDEX quarantine_refused_at ON quarantine (refused_at) WHERE replayed_at IS NULL;
CREATE INDEX quarantine_booking ON quarantine (booking_id);

GRANT SELECT, INSERT ON quarantine TO xrides_writer;
GRANT UPDATE (replayed_at, replayed_as, last_replay_at, replay_errors) ON quarantine TO xrides_writer;
-- The API runs an operator's replay (POST /v1/quarantine/replay, admin scope): it may record the
-- outcome, nothing else.
GRANT UPDATE (replayed_at, replayed_as, last_replay_at, replay_errors) ON quarantine TO xrides_reader;
