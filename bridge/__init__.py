"""The bridge: Kafka jobs topic -> edge validation -> micro-batches -> ledger -> Celery, with
safe offsets, concurrent dispatch, an in-flight cap and gpu/cpu routing."""
