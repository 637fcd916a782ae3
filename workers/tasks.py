"""Celery tasks. One ``run_batch`` per micro-batch; JSON payload:

``{"batch_id": str, "model": str, "jobs": [{"job_id", "input", "deadline_ms"?}, ...]}``
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import OperationalError

from agentq.log import get_logger
from storage.ledger import requeue_jobs
from storage.retry import fail_jobs
from workers.app import app, worker_context
from engine.errors import EngineUnavailable
from workers.execute import BatchOutcome, execute_batch, utcnow
from workers.retry import backoff_s, dead_letter, retry_batches

log = get_logger("agentq.worker")

MAX_TASK_RETRIES = 8


@app.task(name="agentq.run_batch", bind=True, max_retries=MAX_TASK_RETRIES)
def run_batch(self: Any, batch: dict[str, Any]) -> dict[str, Any]:
    ctx = worker_context()
    ids = [j["job_id"] for j in batch["jobs"]]
    try:
        outcome = execute_batch(ctx, batch)
    except EngineUnavailable as e:
        _give_back(ctx, ids, "MODEL_UNAVAILABLE", str(e), self.request.retries)
        raise self.retry(exc=e, countdown=backoff_s(self.request.retries)) from e
    except OperationalError as e:
        log.warning("batch_db_unavailable", batch_id=batch.get("batch_id"), error=str(e)[:200])
        raise self.retry(exc=e, countdown=backoff_s(self.request.retries)) from e
    if outcome.retry:
        _retry_later(self, batch, outcome)
    log.info("batch_done", batch_id=batch.get("batch_id"), model=batch["model"],
             batch_size=len(ids), **outcome.as_dict())
    return outcome.as_dict()


def _retry_later(task: Any, batch: dict[str, Any], outcome: BatchOutcome) -> None:
    """Re-enqueue the jobs put back to queued, after a jittered backoff. If the publish fails the
    jobs stay queued in the ledger and the reaper re-enqueues them after their lease."""
    attempts = max(n for _, n in outcome.retry)
    payload = retry_batches(batch["model"], [j for j, _ in outcome.retry], batch["batch_id"],
                            attempts)
    queue = (task.request.delivery_info or {}).get("routing_key") or None
    delay = backoff_s(attempts)
    try:
        run_batch.apply_async(args=[payload], queue=queue, countdown=delay)
        log.info("jobs_retry_scheduled", batch_id=payload["batch_id"], jobs=len(outcome.retry),
                 attempt=attempts, delay_s=round(delay, 2))
    except Exception as e:  # the ledger keeps them queued; the reaper picks them up
        log.warning("retry_publish_failed", error=str(e)[:200])


def _give_back(ctx: Any, ids: list[str], reason: str, error: str, retries: int) -> None:
    """Return claimed jobs to queued for a retry, or fail them after the last retry."""
    try:
        with ctx.db.begin() as conn:
            failed = []
            if retries >= MAX_TASK_RETRIES:
                failed = fail_jobs(conn, [(i, reason, error) for i in ids], utcnow())
            else:
                requeue_jobs(conn, ids, reason, error)
    except OperationalError as e:
        log.warning("give_back_failed", error=str(e)[:200])
        return
    dead_letter(ctx.dead_letters(), failed)


__all__ = ["run_batch"]
