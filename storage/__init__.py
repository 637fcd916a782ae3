"""Storage: the PostgreSQL job ledger, results, model registry, bulk writes and SQL views."""

from storage.schema import JobStatus, jobs, metadata, models, results

__all__ = ["JobStatus", "jobs", "metadata", "models", "results"]
