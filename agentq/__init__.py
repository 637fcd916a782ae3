"""agentq: batched ML inference jobs for AI agents (Kafka → Celery → ONNX Runtime → PostgreSQL)."""

__version__ = "0.1.0"
