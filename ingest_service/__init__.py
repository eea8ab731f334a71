"""The ingest API: validates rides, acknowledges them once Kafka has them, and tracks them."""
