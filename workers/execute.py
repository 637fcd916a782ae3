"""Run one batch: expire, claim, pre-process, infer, post-process, write — per-item failures
fail alone. The caller (the Celery task) owns retries; this module owns the ledger transitions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agentq.log import get_logger
from producers.contract import RejectReason
from storage.ledger import end_jobs, finish_jobs, start_jobs
from storage.schema import JobStatus
from workers.handlers import Prepared

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

    def as_dict(self) -> dict[str, Any]:
        return {"succeeded": self.succeeded, "failed": self.failed, "expired": self.expired,
                "skipped": self.skipped, "infer_ms": round(self.infer_ms, 3)}


def _infer(ctx: Any, model: str, prepared: Prepared) -> tuple[list[np.ndarray] | None,
                                                               dict[int, str]]:
    """Run the batch; if the batch as a whole fails, run items one by one so a bad item fails
    alone. Returns (outputs for the items still ok, errors by original index)."""
    try:
        return ctx.engine.run(model, prepared.feeds), {}
    except Exception as batch_error:  # ORT raises plain RuntimeError subclasses
        log.warning("batch_inference_failed", model=model, error=str(batch_error))
    per_item: list[list[np.ndarray]] = []
    errors: dict[int, str] = {}
    keep: list[int] = []
    for k, idx in enumerate(prepared.ok):
        feeds = {name: arr[k:k + 1] for name, arr in prepared.feeds.items()}
        try:
            per_item.append(ctx.engine.run(model, feeds))
            keep.append(k)
        except Exception as e:
            errors[idx] = f"inference failed: {e}"
    if not per_item:
        return None, errors
    outputs = [np.concatenate([o[j] for o in per_item]) for j in range(len(per_item[0]))]
    prepared.ok = [prepared.ok[k] for k in keep]
    prepared.extras = [prepared.extras[k] for k in keep]
    return outputs, errors


def execute_batch(ctx: Any, batch: dict[str, Any]) -> BatchOutcome:
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
        claimed = start_jobs(conn, [j["job_id"] for j in live], now)
    run = [j for j in live if j["job_id"] in claimed]
    out.skipped = len(live) - len(run)
    if not run:
        return out
    handler = ctx.handler(model)
    prepared = handler.prepare([j["input"] for j in run])
    errors = dict(prepared.errors)
    rows: list[dict[str, Any]] = []
    if prepared.ok:
        t0 = time.perf_counter()
        outputs, infer_errors = _infer(ctx, model, prepared)
        out.infer_ms = (time.perf_counter() - t0) * 1000
        errors.update(infer_errors)
        if outputs is not None:
            for idx, res in zip(prepared.ok, handler.results(outputs, prepared), strict=True):
                rows.append({"job_id": run[idx]["job_id"], "model": model, **res})
    failures = [(run[i]["job_id"], JobStatus.FAILED, RejectReason.INFERENCE_FAILED.value, msg)
                for i, msg in sorted(errors.items())]
    finished = utcnow()
    with ctx.db.begin() as conn:
        out.succeeded = finish_jobs(conn, rows, finished)
        out.failed = end_jobs(conn, failures, finished)
    out.failures = [(f[0], f[2], f[3]) for f in failures]
    return out
