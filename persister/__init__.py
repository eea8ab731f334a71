"""The persister: the one consumer that writes rides from Kafka into PostgreSQL, exactly once in effect."""
