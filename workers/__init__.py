"""Workers: the Celery app, the run_batch task, batch execution, the JobBatch every queue
carries, publishing and the retry policy."""
