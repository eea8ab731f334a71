"""The Elasticsearch indexer: applies the stream job's actions (``rides.es``) in bulk."""
