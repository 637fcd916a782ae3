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

from agentq import metrics
from agentq.failpoints import active as failpoints_active
from agentq.failpoints import failpoint, failpoint_keys
from agentq.log import get_logger
from engine.errors import EngineUnavailable
from models.catalog import Prepared
from producers.contract import RejectReason
from producers.dlq import dead_letter_and_mark
from producers.jsonsafe import printable
from storage.batches import Claim, claim_batch, count_attempt
from storage.db import transaction
from storage.errors import StorageRefused
from storage.ledger import Outcome, expire_jobs, fail_jobs, finish_jobs, requeue_jobs
from workers.batch import JobBatch

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
    finished_ids: list[str] = field(default_factory=list)  # results written (for latency)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    retry: dict[str, int] = field(default_factory=dict)  # job_id -> attempts, to run again
    fenced: int = 0  # results not landed: another attempt holds the job now

    def as_dict(self) -> dict[str, Any]:
        return {"succeeded": self.succeeded, "failed": self.failed, "expired": self.expired,
                "skipped": self.skipped, "retried": len(self.retry), "fenced": self.fenced,
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


def execute_batch(ctx: Any, batch: JobBatch) -> BatchOutcome:
    """Expire, claim, then run: jobs held by this batch's claim run as one batch; *suspects*
    (a delivery died with them) run one by one, each counting its own attempt, so a job that
    kills its process uses up only its own attempts (see ``storage.batches``)."""
    out = BatchOutcome()
    now = utcnow()
    now_ms = now.timestamp() * 1000
    live = [i for i, d in enumerate(batch.deadlines_ms) if not d or d >= now_ms]
    expired = [batch.job_ids[i] for i, d in enumerate(batch.deadlines_ms) if d and d < now_ms]
    with transaction(ctx.db) as conn:
        out.expired = expire_jobs(conn, [(j, RejectReason.EXPIRED.value,
                                          "deadline passed before inference") for j in expired],
                                  now)
        claimed = claim_batch(conn, batch.batch_id, batch.model,
                              [batch.job_ids[i] for i in live], now) if live else {}
    run = [i for i in live if batch.job_ids[i] in claimed]
    out.skipped = len(live) - len(run)
    fresh = [i for i in run if not claimed[batch.job_ids[i]].suspect]
    if fresh:
        _run(ctx, batch.take(fresh), {batch.job_ids[i]: claimed[batch.job_ids[i]]
                                      for i in fresh}, out)
    for i in run:
        if claimed[batch.job_ids[i]].suspect:
            _run_alone(ctx, batch.take([i]), out)
    metrics.after_batch(batch.model, out, batch, now_ms, time.time() * 1000)
    return out


def _run_alone(ctx: Any, job: JobBatch, out: BatchOutcome) -> None:
    limit = ctx.settings.worker.max_attempts
    job_id = job.job_ids[0]
    with transaction(ctx.db) as conn:
        counted = count_attempt(conn, job_id, limit)
    if counted is None:
        out.skipped += 1
        return
    attempts, may_run, lease = counted
    if may_run:
        _run(ctx, job, {job_id: Claim(attempts, True, lease)}, out)
        return
    error = f"worker process died running this job; gave up after {attempts} attempts"
    with transaction(ctx.db) as conn:
        failed = fail_jobs(conn, [(job_id, RejectReason.WORKER_CRASHED.value, error)], utcnow(),
                           {job_id: lease})
    _record_failed(ctx, failed, out)


def _run(ctx: Any, run: JobBatch, claims: dict[str, Claim], out: BatchOutcome) -> None:
    model = run.model
    handler = ctx.handler(model)
    prepared = handler.prepare(run.inputs)
    final = {i: msg for i, msg in prepared.errors.items()}  # bad input: retrying cannot help
    retry: dict[int, str] = {}
    rows: list[dict[str, Any]] = []
    if prepared.ok:
        keys = ([json.dumps(run.inputs[i]) for i in prepared.ok]
                if failpoints_active("worker.item") else None)
        t0 = time.perf_counter()
        outputs, infer_errors = _infer(ctx, model, prepared, keys)
        out.infer_ms += (time.perf_counter() - t0) * 1000
        metrics.padding(model, prepared.feeds)
        limit = ctx.settings.worker.max_attempts
        for i, msg in infer_errors.items():
            n = claims[run.job_ids[i]].attempts
            if n >= limit:
                final[i] = f"{msg} (attempt {n} of {limit})"
            else:
                retry[i] = msg
        if outputs is not None:
            for idx, res in zip(prepared.ok, handler.results(outputs, prepared), strict=True):
                jid = run.job_ids[idx]
                rows.append({"job_id": jid, "model": model, "lease": claims[jid].lease, **res})
    reason = RejectReason.INFERENCE_FAILED.value
    failures = [(run.job_ids[i], reason, m) for i, m in sorted(final.items())]
    retries = [(run.job_ids[i], reason, m) for i, m in sorted(retry.items())]
    _land(ctx, rows, failures, retries, claims, out)


def _land(ctx: Any, rows: list[dict[str, Any]], failures: list[Outcome], retries: list[Outcome],
          claims: dict[str, Claim], out: BatchOutcome) -> None:
    """One transaction: results + succeeded, failed, queued again — each only while the attempt
    still holds the job (its batch claim, or its lease when run alone). If the database refuses
    what the batch holds (not a lost connection), the jobs land one by one and a job whose own
    write is refused fails alone (STORAGE_REFUSED)."""
    leases = {j: c.lease for j, c in claims.items()}
    hold = next(iter(claims.values())).hold  # one claim for all: _run gets held jobs or one
    finished = utcnow()
    try:
        with transaction(ctx.db) as conn:
            succeeded = finish_jobs(conn, rows, finished, hold)
            failed = fail_jobs(conn, failures, finished, leases, hold)
            again = requeue_jobs(conn, retries, leases, hold)
    except StorageRefused as e:
        if len(rows) + len(failures) + len(retries) <= 1:
            return _refused(ctx, rows, failures, retries, claims, str(e), out)
        log.warning("batch_write_refused_isolating", jobs=len(claims), error=str(e)[:300])
        for r in rows:
            _land(ctx, [r], [], [], claims, out)
        for f in failures:
            _land(ctx, [], [f], [], claims, out)
        for q in retries:
            _land(ctx, [], [], [q], claims, out)
        return
    failpoint("worker.after_commit")  # results durable, replies still only in the outbox
    out.succeeded += succeeded
    out.fenced += len(rows) - succeeded
    if succeeded == len(rows):
        out.finished_ids += [r["job_id"] for r in rows]
    out.retry.update({j: claims[j].attempts for j in again})
    _record_failed(ctx, failed, out)


def _refused(ctx: Any, rows: list[dict[str, Any]], failures: list[Outcome],
             retries: list[Outcome], claims: dict[str, Claim], why: str,
             out: BatchOutcome) -> None:
    job_id = str(rows[0]["job_id"]) if rows else (failures or retries)[0][0]
    with transaction(ctx.db) as conn:
        failed = fail_jobs(conn, [(job_id, RejectReason.STORAGE_REFUSED.value,
                                   printable(f"the ledger refused this job's outcome: {why}"))],
                           utcnow(), {job_id: claims[job_id].lease}, claims[job_id].hold)
    _record_failed(ctx, failed, out)


def _record_failed(ctx: Any, failed: list[dict[str, Any]], out: BatchOutcome) -> None:
    out.failed += len(failed)
    out.failures += [(r["job_id"], r["reason"], r["error"]) for r in failed]
    dead_letter_and_mark(ctx.db, ctx.dead_letters(), failed)
