"""Training utilities: run directory, logging helpers, small schema-correct test shards."""
