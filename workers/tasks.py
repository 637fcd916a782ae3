"""Celery tasks. One ``run_batch`` per micro-batch; JSON payload:

``{"batch_id": str, "model": str, "jobs": [{"job_id", "input", "deadline_ms"?}, ...]}``
"""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy.exc import OperationalError

from agentq.log import get_logger
from producers.contract import RejectReason
from storage.ledger import end_jobs, requeue_jobs
from storage.schema import JobStatus
from workers.app import app, worker_context
from workers.errors import EngineUnavailable
from workers.execute import execute_batch, utcnow

log = get_logger("agentq.worker")

MAX_TASK_RETRIES = 8


def backoff_s(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * (2 ** attempt)))


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
    log.info("batch_done", batch_id=batch.get("batch_id"), model=batch["model"],
             batch_size=len(ids), **outcome.as_dict())
    return outcome.as_dict()


def _give_back(ctx: Any, ids: list[str], reason: str, error: str, retries: int) -> None:
    """Return claimed jobs to queued for a retry, or fail them after the last retry."""
    try:
        with ctx.db.begin() as conn:
            if retries >= MAX_TASK_RETRIES:
                end_jobs(conn, [(i, JobStatus.FAILED, reason, error) for i in ids], utcnow())
            else:
                requeue_jobs(conn, ids, reason, error)
    except OperationalError as e:
        log.warning("give_back_failed", error=str(e)[:200])


__all__ = ["run_batch", "RejectReason"]
