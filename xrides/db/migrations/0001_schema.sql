-- The system of record. Ride columns follow xrides/ride/schemas.py::postgres_columns() (a test
-- compares them with information_schema); every timestamp is timestamptz, stored in UTC.

CREATE TABLE customers (
    user_id bigint PRIMARY KEY,
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cab_drivers (
    driver_id bigint PRIMARY KEY,          -- 0 = no driver assigned yet
    vehicle_model_id integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cab_rides (
    booking_id bigint NOT NULL,
    user_id bigint NOT NULL REFERENCES customers (user_id),
    vehicle_model_id integer NOT NULL,
    package_id integer,
    travel_type_id integer NOT NULL,
    from_area_id bigint NOT NULL,
    to_area_id bigint,
    from_city_id bigint,
    to_city_id bigint,
    from_date timestamp with time zone NOT NULL,
    to_date timestamp with time zone,
    online_booking smallint NOT NULL CHECK (online_booking IN (0, 1)),
    mobile_site_booking smallint NOT NULL CHECK (mobile_site_booking IN (0, 1)),
    booking_created timestamp with time zone NOT NULL,
    from_lat numeric CHECK (from_lat BETWEEN -90 AND 90),
    from_long numeric CHECK (from_long BETWEEN -180 AND 180),
    to_lat numeric CHECK (to_lat BETWEEN -90 AND 90),
    to_long numeric CHECK (to_long BETWEEN -180 AND 180),
    driver_id bigint NOT NULL REFERENCES cab_drivers (driver_id),
    car_cancellation smallint NOT NULL CHECK (car_cancellation IN (0, 1)),
    -- ingestion metadata
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    version bigint NOT NULL,               -- µs at acceptance; the highest version of a booking wins
    source text NOT NULL,
    received_at timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (booking_id, from_date)
) PARTITION BY RANGE (from_date);

CREATE INDEX cab_rides_from_date ON cab_rides (from_date);
CREATE INDEX cab_rides_from_area ON cab_rides (from_area_id, from_date);
CREATE INDEX cab_rides_travel_type ON cab_rides (travel_type_id, from_date);
CREATE INDEX cab_rides_booking_created ON cab_rides (booking_created);
CREATE INDEX cab_rides_user ON cab_rides (user_id);

-- One row per booking: which version is current and where (from_date) it lives. This is what
-- lets an update move a ride to another month's partition, and an old replay lose.
CREATE TABLE ride_versions (
    booking_id bigint PRIMARY KEY,
    version bigint NOT NULL,
    from_date timestamptz NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL
);

-- One row per consumed message, written with the rides: tracking reads it.
CREATE TABLE ride_receipts (
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    booking_id bigint,
    version bigint,
    outcome text NOT NULL CHECK (outcome IN ('stored', 'superseded', 'failed')),
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_partition, kafka_offset)
);
CREATE INDEX ride_receipts_stored_at ON ride_receipts (stored_at);
CREATE INDEX ride_receipts_booking ON ride_receipts (booking_id);

-- Poison messages: never block a partition; kept with the reason and the original bytes.
CREATE TABLE ingest_failures (
    id bigserial PRIMARY KEY,
    kafka_topic text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL,
    booking_id bigint,
    reason text NOT NULL,
    message_key bytea,
    payload bytea NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz,
    UNIQUE (kafka_partition, kafka_offset)
);

-- Offsets live here, committed in the same transaction as the rows they produced.
CREATE TABLE consumer_offsets (
    group_id text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Monthly partitions of cab_rides, created idempotently (by migrate, and by the writer on demand).
CREATE FUNCTION ensure_ride_partition(month_start date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', month_start)::date;
    name text := format('cab_rides_%s', to_char(first, 'YYYY_MM'));
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF cab_rides FOR VALUES FROM (%L) TO (%L)',
        name,
        (first::timestamp AT TIME ZONE 'UTC'),
        ((first + interval '1 month')::timestamp AT TIME ZONE 'UTC')
    );
END
$$;
