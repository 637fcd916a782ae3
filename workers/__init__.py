"""Workers: the bridge (Kafka → Celery), the micro-batcher, safe offsets, the Celery app and
tasks, the inference engine, the autoscaler."""
