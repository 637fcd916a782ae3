"""Run one batch: expire, claim, pre-process, infer, post-process, write — per-item failures
fail alone. This module owns the ledger transitions (a failed item is put back to ``queued``
until it has used its attempts, then ``failed`` with a DLQ copy); the caller (the Celery task)
re-enqueues the retries with backoff.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agentq.log import get_logger
from producers.contract import RejectReason
from storage.ledger import end_jobs, finish_jobs
from storage.retry import claim_jobs, count_attempt, fail_jobs, retry_later
from storage.schema import JobStatus
from agentq import metrics
from engine.errors import EngineUnavailable
from agentq.failpoints import active as failpoints_active
from agentq.failpoints import failpoint, failpoint_keys
from models.catalog import Prepared
from workers.retry import dead_letter

log = get_logger("agentq.worker")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class BatchOutcome:
    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    skipped: int = 0  # already terminal: a duplicate delivery
    infer_ms: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    retry: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # (job, attempts)

    def as_dict(self) -> dict[str, Any]:
        return {"succeeded": self.succeeded, "failed": self.failed, "expired": self.expired,
                "skipped": self.skipped, "retried": len(self.retry),
                "infer_ms": round(self.infer_ms, 3)}


def _infer(ctx: Any, model: str, prepared: Prepared,
           keys: list[str] | None = None) -> tuple[list[np.ndarray] | None, dict[int, str]]:
    """Run the batch; if the batch as a whole fails, run items one by one so a bad item fails
    alone. Returns (outputs for the items still ok, errors by original index). ``keys`` (one per
    ok item) exist only while a keyed failpoint is set (tests)."""
    try:
        failpoint("worker.mid_inference")
        if keys:
            failpoint_keys("worker.item", keys)
        return ctx.engine.run(model, prepared.feeds), {}
    except EngineUnavailable:
        raise  # not the jobs' fault: run_batch gives the batch back and retries the task
    except Exception as batch_error:  # ORT raises plain RuntimeError subclasses
        log.warning("batch_inference_failed", model=model, error=str(batch_error))
    per_item: list[list[np.ndarray]] = []
    errors: dict[int, str] = {}
    keep: list[int] = []
    for k, idx in enumerate(prepared.ok):
        feeds = {name: arr[k:k + 1] for name, arr in prepared.feeds.items()}
        try:
            if keys:
                failpoint_keys("worker.item", [keys[k]])
            per_item.append(ctx.engine.run(model, feeds))
            keep.append(k)
        except EngineUnavailable:
            raise
        except Exception as e:
            errors[idx] = f"inference failed: {e}"
    if not per_item:
        return None, errors
    outputs = [np.concatenate([o[j] for o in per_item]) for j in range(len(per_item[0]))]
    prepared.ok = [prepared.ok[k] for k in keep]
    prepared.extras = [prepared.extras[k] for k in keep]
    return outputs, errors


def execute_batch(ctx: Any, batch: dict[str, Any]) -> BatchOutcome:
    """Expire, claim, then run: jobs claimed fresh run as one batch; *suspects* (found running:
    a delivery died with them) run one by one, each counting its own attempt, so a job that
    kills its process uses up only its own attempts (see ``storage.retry``)."""
    model = batch["model"]
    jobs = batch["jobs"]
    out = BatchOutcome()
    now = utcnow()
    now_ms = now.timestamp() * 1000
    live = [j for j in jobs if not j.get("deadline_ms") or j["deadline_ms"] >= now_ms]
    expired = [j for j in jobs if j.get("deadline_ms") and j["deadline_ms"] < now_ms]
    with ctx.db.begin() as conn:
        out.expired = end_jobs(conn, [(j["job_id"], JobStatus.EXPIRED, RejectReason.EXPIRED.value,
                                       "deadline passed before inference") for j in expired], now)
        claimed = claim_jobs(conn, [j["job_id"] for j in live], now)
    run = [j for j in live if j["job_id"] in claimed]
    out.skipped = len(live) - len(run)
    fresh = [j for j in run if not claimed[j["job_id"]].suspect]
    if fresh:
        _run(ctx, model, fresh, {j["job_id"]: claimed[j["job_id"]].attempts for j in fresh}, out)
    for j in run:
        if claimed[j["job_id"]].suspect:
            _run_alone(ctx, model, j, out)
    metrics.after_batch(model, out)
    return out


def _run_alone(ctx: Any, model: str, job: dict[str, Any], out: BatchOutcome) -> None:
    limit = ctx.settings.worker.max_attempts
    with ctx.db.begin() as conn:
        counted = count_attempt(conn, job["job_id"], limit)
    if counted is None:
        out.skipped += 1
        return
    attempts, may_run = counted
    if may_run:
        _run(ctx, model, [job], {job["job_id"]: attempts}, out)
        return
    error = f"worker process died running this job; gave up after {attempts} attempts"
    with ctx.db.begin() as conn:
        failed = fail_jobs(conn, [(job["job_id"], RejectReason.WORKER_CRASHED.value, error)],
                           utcnow())
    _record_failed(ctx, failed, out)


def _run(ctx: Any, model: str, run: list[dict[str, Any]], attempts: dict[str, int],
         out: BatchOutcome) -> None:
    handler = ctx.handler(model)
    prepared = handler.prepare([j["input"] for j in run])
    final = {i: msg for i, msg in prepared.errors.items()}  # bad input: retrying cannot help
    retry: dict[int, str] = {}
    rows: list[dict[str, Any]] = []
    if prepared.ok:
        keys = ([json.dumps(run[i]["input"]) for i in prepared.ok]
                if failpoints_active("worker.item") else None)
        t0 = time.perf_counter()
        outputs, infer_errors = _infer(ctx, model, prepared, keys)
        out.infer_ms += (time.perf_counter() - t0) * 1000
        metrics.padding(model, prepared.feeds)
        limit = ctx.settings.worker.max_attempts
        for i, msg in infer_errors.items():
            n = attempts[run[i]["job_id"]]
            if n >= limit:
                final[i] = f"{msg} (attempt {n} of {limit})"
            else:
                retry[i] = msg
        if outputs is not None:
            for idx, res in zip(prepared.ok, handler.results(outputs, prepared), strict=True):
                rows.append({"job_id": run[idx]["job_id"], "model": model, **res})
    reason = RejectReason.INFERENCE_FAILED.value
    finished = utcnow()
    with ctx.db.begin() as conn:
        out.succeeded += finish_jobs(conn, rows, finished)
        failed = fail_jobs(conn, [(run[i]["job_id"], reason, m) for i, m in sorted(final.items())],
                           finished)
        retry_later(conn, [(run[i]["job_id"], reason, m) for i, m in sorted(retry.items())])
    out.retry += [(run[i], attempts[run[i]["job_id"]]) for i in sorted(retry)]
    _record_failed(ctx, failed, out)


def _record_failed(ctx: Any, failed: list[dict[str, Any]], out: BatchOutcome) -> None:
    out.failed += len(failed)
    out.failures += [(r["job_id"], r["reason"], r["error"]) for r in failed]
    if failed:
        dead_letter(ctx.dead_letters(), failed)
