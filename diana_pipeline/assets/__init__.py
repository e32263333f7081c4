"""Assets, by domain: ingestion (events), and later statistics and outputs."""
