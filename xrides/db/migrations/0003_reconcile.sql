-- Reconciliation (reconcile/) counts bookings per UTC pickup day from ride_versions, the
-- persister's one-row-per-booking summary of its receipts; without this index every run would
-- scan the whole table. Built inside the migration's transaction: it blocks the persister's writes
-- to ride_versions for the build's duration (seconds at a year of XRides' volume).
CREATE INDEX IF NOT EXISTS ride_versions_from_date ON ride_versions (from_date);
