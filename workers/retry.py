"""Retry policy and dead-lettering for jobs that fail on a worker (DESIGN §4.6).

A job whose inference fails is retried with exponential backoff and full jitter until it has used
``max_attempts``; then it is ``failed`` with its last error and a copy goes to the DLQ topic. The
DLQ copy is a side concern: if Kafka is unreachable it is logged and skipped, the ledger row
(the source of truth) is already written.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from agentq.log import get_logger

log = get_logger("agentq.retry")

ATTEMPTS_EXHAUSTED = "ATTEMPTS_EXHAUSTED"


def backoff_s(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2 ** attempt)))


def retry_batches(model: str, jobs: Sequence[dict[str, Any]], batch_id: str,
                  attempts: int) -> dict[str, Any]:
    """The run_batch payload that runs ``jobs`` again."""
    return {"batch_id": f"{batch_id}~r{attempts}", "model": model,
            "jobs": [{k: j[k] for k in ("job_id", "input", "deadline_ms") if k in j}
                     for j in jobs]}


def dlq_value(row: dict[str, Any]) -> bytes:
    """A job message v1 rebuilt from the ledger row, so the DLQ copy can be replayed."""
    msg: dict[str, Any] = {"v": 1, "job_id": row["job_id"], "model": row["model"],
                           "input": row.get("input")}
    if row.get("tenant"):
        msg["tenant"] = row["tenant"]
    return json.dumps(msg, separators=(",", ":")).encode()


def dead_letter(dlq: Any, rows: Sequence[dict[str, Any]], timeout_s: float = 10.0) -> int:
    """Send a DLQ copy of each failed ledger row; returns how many were acknowledged."""
    if not rows or dlq is None:
        return 0
    try:
        futures = [dlq.send(dlq_value(r), r.get("reason") or "FAILED", r.get("error") or "",
                            topic=r.get("source_topic"), partition=r.get("source_partition"),
                            offset=r.get("source_offset"), job_id=r["job_id"])
                   for r in rows]
        for f in futures:
            f.get(timeout=timeout_s)
    except Exception as e:  # a side concern: the ledger already says failed
        log.warning("dlq_copy_failed", jobs=len(rows), error=str(e)[:200])
        return 0
    log.info("jobs_dead_lettered", count=len(rows),
             reasons=sorted({str(r.get("reason")) for r in rows}))
    return len(rows)
