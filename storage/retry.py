"""Ledger writes for retries, crash accounting and the reaper.

An *attempt* is one start of inference for a job. A delivery claims its jobs with
:func:`claim_jobs`: a ``queued`` job becomes ``running`` and its attempt is counted; a job found
already ``running`` was being run by a delivery that never finished (its worker died, or the
reaper re-enqueued it), so it is a *suspect*: its attempt is counted only when it is run on its
own (:func:`count_attempt`). That way a job that kills its process uses up its own attempts and
not those of the good jobs that shared its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from storage.schema import JobStatus


@dataclass(frozen=True)
class Claim:
    attempts: int
    suspect: bool  # it was already running: a previous delivery died with it


def claim_jobs(conn: Connection, job_ids: Sequence[str], started_at: datetime) -> dict[str, Claim]:
    """Mark live jobs running; count an attempt for those that were queued. Terminal jobs (a
    duplicate delivery) are not returned."""
    if not job_ids:
        return {}
    res = conn.execute(
        text(
            "WITH prev AS (SELECT job_id, status AS was FROM jobs "
            "  WHERE job_id = ANY(CAST(:ids AS uuid[])) AND status IN ('queued', 'running') "
            "  FOR UPDATE) "
            "UPDATE jobs AS j SET status = 'running', started_at = :t, updated_at = now(), "
            "  attempts = j.attempts + CASE WHEN prev.was = 'queued' THEN 1 ELSE 0 END "
            "FROM prev WHERE j.job_id = prev.job_id "
            "RETURNING j.job_id, j.attempts, prev.was::text"
        ),
        {"t": started_at, "ids": list(job_ids)},
    )
    return {str(r[0]): Claim(int(r[1]), r[2] == "running") for r in res}


def count_attempt(conn: Connection, job_id: str, max_attempts: int) -> tuple[int, bool] | None:
    """Count one attempt for a running job about to run on its own, unless it has used all of
    them. Returns (attempts, may_run), or None when the job is terminal."""
    row = conn.execute(
        text(
            "WITH prev AS (SELECT job_id, attempts AS was FROM jobs "
            "  WHERE job_id = CAST(:id AS uuid) AND status = 'running' FOR UPDATE) "
            "UPDATE jobs AS j SET updated_at = now(), started_at = now(), "
            "  attempts = prev.was + CASE WHEN prev.was < :lim THEN 1 ELSE 0 END "
            "FROM prev WHERE j.job_id = prev.job_id RETURNING j.attempts, prev.was < :lim"
        ),
        {"id": job_id, "lim": max_attempts},
    ).first()
    return None if row is None else (int(row[0]), bool(row[1]))


def fail_jobs(conn: Connection, outcomes: Sequence[tuple[str, str, str]],
              finished_at: datetime) -> list[dict[str, Any]]:
    """Mark live jobs ``failed`` with (job_id, reason, error); returns what the DLQ copy needs
    (job_id, model, input, source coordinates, attempts) for the jobs that changed."""
    if not outcomes:
        return []
    res = conn.execute(
        text(
            "UPDATE jobs AS j SET status = 'failed', reason = o.reason, error = o.error, "
            "finished_at = :t, updated_at = now() "
            "FROM unnest(CAST(:ids AS uuid[]), CAST(:rs AS text[]), CAST(:er AS text[])) "
            "AS o(job_id, reason, error) "
            "WHERE j.job_id = o.job_id AND j.status IN ('queued', 'running') "
            "RETURNING j.job_id::text, j.model, j.input, j.tenant, j.source_topic, "
            "j.source_partition, j.source_offset, j.attempts, j.reason, j.error"
        ),
        {"t": finished_at, "ids": [o[0] for o in outcomes], "rs": [o[1] for o in outcomes],
         "er": [o[2][:2000] for o in outcomes]},
    )
    return [dict(r._mapping) for r in res]


def retry_later(conn: Connection, outcomes: Sequence[tuple[str, str, str]]) -> int:
    """Put running jobs back to ``queued`` with (job_id, reason, error), keeping their
    attempts; the caller re-enqueues them after a backoff."""
    if not outcomes:
        return 0
    res = conn.execute(
        text(
            "UPDATE jobs AS j SET status = 'queued', reason = o.reason, error = o.error, "
            "queued_at = now(), updated_at = now() "
            "FROM unnest(CAST(:ids AS uuid[]), CAST(:rs AS text[]), CAST(:er AS text[])) "
            "AS o(job_id, reason, error) WHERE j.job_id = o.job_id AND j.status = 'running'"
        ),
        {"ids": [o[0] for o in outcomes], "rs": [o[1] for o in outcomes],
         "er": [o[2][:2000] for o in outcomes]},
    )
    return res.rowcount


def stuck_queues(conn: Connection, lease_s: float) -> list[str]:
    """Celery queues of the live jobs not touched for ``lease_s``."""
    rows = conn.execute(
        text("SELECT DISTINCT coalesce(queue, '') FROM jobs WHERE status IN ('queued', "
             "'running') AND updated_at < now() - make_interval(secs => :lease)"),
        {"lease": float(lease_s)},
    )
    return [r[0] for r in rows]


def take_stuck(conn: Connection, lease_s: float, limit: int = 1000, skip_queues: Sequence[str] = (),
               max_attempts: int = 1 << 15) -> list[dict[str, Any]]:
    """Live jobs not touched for ``lease_s``, locked (skipping rows another reaper holds) and
    their lease renewed, so the caller re-enqueues each once per lease. Jobs of the queues in
    ``skip_queues`` (they still hold a backlog) are left alone, except running jobs that have
    used ``max_attempts`` (the caller fails those)."""
    res = conn.execute(
        text(
            "WITH stuck AS (SELECT job_id FROM jobs WHERE status IN ('queued', 'running') "
            "  AND updated_at < now() - make_interval(secs => :lease) "
            "  AND NOT (coalesce(queue, '') = ANY(CAST(:skip AS text[])) "
            "           AND NOT (status = 'running' AND attempts >= :max)) "
            "  ORDER BY updated_at LIMIT :lim FOR UPDATE SKIP LOCKED) "
            "UPDATE jobs AS j SET updated_at = now() FROM stuck WHERE j.job_id = stuck.job_id "
            "RETURNING j.job_id::text, j.model, j.input, j.status::text, j.attempts, j.queue, "
            "j.deadline_at, j.reason, j.error"
        ),
        {"lease": float(lease_s), "lim": limit, "skip": list(skip_queues), "max": max_attempts},
    )
    return [dict(r._mapping) for r in res]


TERMINAL_VALUES = tuple(s.value for s in JobStatus if s.terminal)
