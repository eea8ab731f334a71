"""Stream processing: PyFlink enrichment of rides, and the indexer that loads them into Elasticsearch."""
