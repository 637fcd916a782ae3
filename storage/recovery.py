"""Ledger transitions of recovery: the reaper taking over stuck jobs (their lease renewed, a
running one fenced under a new lease), re-routing them, and the DLQ copies still owed.

Each takes the caller's connection (its transaction), like ``storage.ledger``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from storage.batches import HELD_JOIN
from storage.schema import LIVE, JobStatus

# A job held by a claimed batch (queued in ``jobs``, running in fact) is stuck when its claim is
# older than the lease; taken over, it becomes ``running`` in ``jobs`` with the claim's attempt
# counted and a lease for that claim and one for the takeover (as if the claim had been written
# per job), so the claim's late outcome is fenced out and the rest is the running path.
TAKE_STUCK = text(
    "WITH stuck AS (SELECT j.job_id, b.batch_id IS NOT NULL AS held, b.started_at AS claimed "
    f"  FROM jobs j {HELD_JOIN} "
    "  WHERE j.status = ANY(CAST(:live AS job_status[])) "
    "  AND j.updated_at < now() - make_interval(secs => :lease) "
    "  AND (b.started_at IS NULL OR b.started_at < now() - make_interval(secs => :lease)) "
    "  AND NOT (coalesce(j.queue, '') = ANY(CAST(:skip AS text[])) "
    "           AND NOT ((j.status = CAST(:running AS job_status) AND j.attempts >= :max) "
    "                    OR (b.batch_id IS NOT NULL AND j.attempts + 1 >= :max))) "
    "  ORDER BY j.updated_at LIMIT :lim FOR UPDATE OF j SKIP LOCKED) "
    "UPDATE jobs AS j SET updated_at = now(), "
    "  status = CASE WHEN stuck.held THEN CAST(:running AS job_status) ELSE j.status END, "
    "  started_at = CASE WHEN stuck.held THEN stuck.claimed ELSE j.started_at END, "
    "  attempts = j.attempts + CASE WHEN stuck.held THEN 1 ELSE 0 END, "
    "  lease = j.lease + CASE WHEN stuck.held THEN 2 "
    "    WHEN j.status = CAST(:running AS job_status) THEN 1 ELSE 0 END "
    "FROM stuck WHERE j.job_id = stuck.job_id "
    "RETURNING j.job_id::text, j.model, j.input, j.status::text, j.attempts, j.queue, "
    "j.deadline_at, j.reason, j.error"
)


def take_stuck(conn: Connection, lease_s: float, limit: int = 1000, skip_queues: Sequence[str] = (),
               max_attempts: int = 1 << 15) -> list[dict[str, Any]]:
    """Live jobs not touched for ``lease_s``, locked (skipping rows another reaper holds) and
    their lease renewed, so the caller re-enqueues each once per lease. Jobs of the queues in
    ``skip_queues`` (they still hold a backlog) are left alone, except running jobs that have
    used ``max_attempts`` (the caller fails those). A running job taken over gets a new lease,
    and a job held by a batch claim becomes ``running`` under one, so the attempt that lost it
    (a worker that is slow, not dead) can no longer land."""
    res = conn.execute(TAKE_STUCK, {
        "lease": float(lease_s), "lim": limit, "skip": list(skip_queues), "max": max_attempts,
        "live": list(LIVE), "running": JobStatus.RUNNING.value})
    return [dict(r._mapping) for r in res]


MOVE = text("UPDATE jobs SET queue = :q WHERE job_id = ANY(CAST(:ids AS uuid[])) "
            "AND status = ANY(CAST(:live AS job_status[]))")


def move_jobs(conn: Connection, job_ids: Sequence[str], queue: str) -> int:
    """Live jobs re-routed to another Celery queue (their first had no live consumer)."""
    if not job_ids:
        return 0
    return conn.execute(MOVE, {"q": queue, "ids": list(job_ids), "live": list(LIVE)}).rowcount


DEAD_LETTERED = text(
    "UPDATE jobs SET dlq_at = now() WHERE job_id = ANY(CAST(:ids AS uuid[])) AND dlq_at IS NULL")


def mark_dead_lettered(conn: Connection, job_ids: Sequence[str]) -> int:
    """The DLQ acknowledged the copies of these failed jobs."""
    if not job_ids:
        return 0
    return conn.execute(DEAD_LETTERED, {"ids": list(job_ids)}).rowcount


# Claimed in the statement that reads them: a copy is taken only once the last sender's window
# has passed (the failing process's from ``finished_at``, a reaper's from ``dlq_claimed_at``), and
# rows another reaper holds are skipped, so one copy is not sent by two processes at once.
OWED_DLQ = text(
    "WITH owed AS (SELECT job_id FROM jobs "
    "  WHERE status = CAST(:failed AS job_status) AND dlq_at IS NULL "
    "  AND coalesce(dlq_claimed_at, finished_at) < now() - make_interval(secs => :age) "
    "  ORDER BY finished_at LIMIT :lim FOR UPDATE SKIP LOCKED) "
    "UPDATE jobs AS j SET dlq_claimed_at = now() FROM owed WHERE j.job_id = owed.job_id "
    "RETURNING j.job_id::text, j.model, j.input, j.tenant, j.priority, j.meta, j.deadline_at, "
    "j.source_topic, j.source_partition, j.source_offset, j.attempts, j.reason, j.error, "
    "j.reply_to")


def owed_dead_letters(conn: Connection, older_than_s: float, limit: int = 500
                      ) -> list[dict[str, Any]]:
    """Failed jobs whose DLQ copy was never acknowledged (its send failed, or its sender died),
    claimed for the caller: nobody else takes them for another ``older_than_s``, which must
    exceed a sender's send window (``producers.dlq.SEND_WINDOW_S``)."""
    rows = conn.execute(OWED_DLQ, {"failed": JobStatus.FAILED.value, "age": older_than_s,
                                   "lim": limit})
    return [dict(r._mapping) for r in rows]
