"""The Celery task: one ``run_batch`` per job batch (``workers.batch.JobBatch.to_payload``).

Registered on an app by ``register(app)`` (``workers.app.make_celery`` does it), so the task and
its settings come from the app it runs in, never from a module global.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from agentq.log import get_logger
from engine.errors import EngineUnavailable
from producers.dlq import dead_letter_and_mark
from storage.db import transaction
from storage.errors import StorageUnavailable
from storage.ledger import fail_jobs, requeue_jobs
from workers.batch import JobBatch
from workers.execute import BatchOutcome, execute_batch, utcnow
from workers.queues import RUN_BATCH, publish, queue_names
from workers.retry import backoff_s, retry_batch_id

log = get_logger("agentq.worker")


def register(app: Celery, context: Any) -> Any:
    """Add ``run_batch`` to ``app``; ``context()`` returns the pool process's WorkerContext."""

    @app.task(name=RUN_BATCH, bind=True)
    def run_batch(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
        return run(self, context(), JobBatch.from_payload(payload))

    return run_batch


def _backoff(ctx: Any, attempt: int) -> float:
    w = ctx.settings.worker
    return backoff_s(attempt, w.retry_backoff_s, w.retry_backoff_cap_s)


def run(task: Any, ctx: Any, batch: JobBatch) -> dict[str, Any]:
    """Execute one batch; give it back and retry the task when the engine or the database is
    unavailable (not the jobs' fault), re-enqueue the jobs that failed with attempts left."""
    retries, most = task.request.retries, ctx.settings.worker.max_task_retries
    picked_ms = time.time() * 1000
    try:
        outcome = execute_batch(ctx, batch)
    except EngineUnavailable as e:
        _give_back(ctx, batch.job_ids, "MODEL_UNAVAILABLE", str(e), retries >= most)
        raise task.retry(exc=e, countdown=_backoff(ctx, retries), max_retries=most) from e
    except StorageUnavailable as e:
        log.warning("batch_db_unavailable", batch_id=batch.batch_id, error=str(e)[:200])
        raise task.retry(exc=e, countdown=_backoff(ctx, retries), max_retries=most) from e
    if outcome.retry:
        _retry_later(task, ctx, batch, outcome)
    waited = None if batch.sent_ms is None else round(max(0.0, picked_ms - batch.sent_ms), 1)
    log.info("batch_done", batch_id=batch.batch_id, model=batch.model, batch_size=len(batch),
             queue_ms=waited, **outcome.as_dict())
    return outcome.as_dict()


def _retry_later(task: Any, ctx: Any, batch: JobBatch, outcome: BatchOutcome) -> None:
    """Re-enqueue the jobs put back to queued, after a jittered backoff. If the publish fails the
    jobs stay queued in the ledger and the reaper re-enqueues them after their lease."""
    attempts = max(outcome.retry.values())
    again = batch.only(outcome.retry, retry_batch_id(batch.batch_id, attempts))
    queue = ((task.request.delivery_info or {}).get("routing_key")
             or queue_names(ctx.settings.queue_prefix)[0])
    delay = _backoff(ctx, attempts)
    try:
        publish(task.app, again, queue, countdown_s=delay)
        log.info("jobs_retry_scheduled", batch_id=again.batch_id, jobs=len(again),
                 attempt=attempts, delay_s=round(delay, 2))
    except Exception as e:  # the ledger keeps them queued; the reaper picks them up
        log.warning("retry_publish_failed", error=str(e)[:200])


def _give_back(ctx: Any, ids: list[str], reason: str, error: str, last: bool) -> None:
    """Return claimed jobs to queued for a retry, or fail them after the last retry."""
    try:
        with transaction(ctx.db) as conn:
            failed = []
            if last:
                failed = fail_jobs(conn, [(i, reason, error) for i in ids], utcnow())
            else:
                requeue_jobs(conn, [(i, reason, error) for i in ids])
    except StorageUnavailable as e:
        log.warning("give_back_failed", error=str(e)[:200])
        return
    dead_letter_and_mark(ctx.db, ctx.dead_letters(), failed)
