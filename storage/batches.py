"""Claims: ``running`` is recorded once per batch, not once per job (migration 0009).

A worker that receives a batch claims it with :func:`claim_batch`: one ``batches`` row (its id,
model, size, claim time, and ``lease``, the number of times the batch was claimed). The jobs of
the batch stay ``queued`` in ``jobs``; a job whose row is queued and whose ``batch_id`` names a
claimed batch is *held* by that claim — running in fact (the ``job_state`` view says so to SQL
users). Its row is written next when it ends (``storage.ledger.finish_jobs`` and the others,
passed the claim's :class:`Hold`): the terminal status, ``started_at`` from the claim, and the
attempt counted then. So a job costs three row writes (queued insert, terminal update, result)
instead of four, and a batch one small insert.

Who holds a job is decided per job from its row, and every takeover writes the job's row, so a
late attempt's write — fenced on ``status = 'queued' AND batch_id = <its batch>`` — finds the
row changed and lands nothing:

* the batch's own jobs (``batch_id`` is this batch) on its first claim: held, no write;
* the same jobs on a later claim of the same batch (a delivery died with them, or Celery
  redelivered it): *suspects*, run one by one (:func:`count_attempt` moves each to ``running`` in
  ``jobs`` under a per-job lease, counting the dead claim's attempt and its own);
* jobs queued under no claimed batch (a retry, a job the reaper re-published, one the bridge
  sent again after a crash): taken over — their ``batch_id`` becomes this batch's, then held;
* jobs held by another claimed batch, or already ``running`` in ``jobs``: suspects.

Terminal jobs are not returned (a duplicate delivery skips them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from storage import pgarray
from storage.schema import LIVE, JobStatus


@dataclass(frozen=True)
class Hold:
    """A batch's claim, which holds its jobs while they run: the fence of their outcome."""

    batch_id: str
    lease: int
    started_at: datetime


@dataclass(frozen=True)
class Claim:
    attempts: int  # this attempt included
    suspect: bool  # a previous delivery died with it: run it alone (count_attempt)
    lease: int = 0  # the fencing token of this attempt (the batch's, for a held job)
    hold: Hold | None = None  # held by this batch's claim (no per-job running write)


CLAIM_BATCH = text(
    "WITH b AS (INSERT INTO batches AS b (batch_id, model, size, lease, started_at) "
    "  VALUES (:b, :m, :n, 1, :t) ON CONFLICT (batch_id) DO UPDATE "
    "  SET lease = b.lease + 1, started_at = EXCLUDED.started_at, size = EXCLUDED.size "
    "  RETURNING lease) "
    "SELECT b.lease, j.job_id, j.running, j.mine, j.attempts, j.other FROM b LEFT JOIN ("
    "  SELECT j.job_id::text AS job_id, j.status = CAST(:running AS job_status) AS running, "
    "    j.batch_id IS NOT DISTINCT FROM CAST(:b AS text) AS mine, j.attempts, "
    "    (j.batch_id IS DISTINCT FROM CAST(:b AS text) "
    "     AND EXISTS (SELECT 1 FROM batches o WHERE o.batch_id = j.batch_id)) AS other "
    "  FROM jobs j WHERE j.job_id = ANY(CAST(:ids AS uuid[])) "
    "  AND j.status = ANY(CAST(:live AS job_status[]))) j ON true"
)

# A queued job under no claimed batch becomes this batch's. Re-checked on the row itself, so of
# two batches taking one job over at once only the first gets it.
TAKE_OVER = text(
    "UPDATE jobs AS j SET batch_id = :b, updated_at = now() "
    "WHERE j.job_id = ANY(CAST(:ids AS uuid[])) AND j.status = CAST(:queued AS job_status) "
    "AND NOT EXISTS (SELECT 1 FROM batches o WHERE o.batch_id = j.batch_id) "
    "RETURNING j.job_id::text, j.attempts"
)


def claim_batch(conn: Connection, batch_id: str, model: str, job_ids: Sequence[str],
                started_at: datetime) -> dict[str, Claim]:
    """Claim a batch for one delivery: its jobs that are live, each held by this claim or a
    suspect (see the module's docstring)."""
    res = conn.execute(CLAIM_BATCH, {
        "b": batch_id, "m": model, "n": len(job_ids), "t": started_at,
        "ids": pgarray.uuids(job_ids), "live": list(LIVE), "running": JobStatus.RUNNING.value})
    rows = res.all()
    lease = int(rows[0][0])
    hold = Hold(batch_id, lease, started_at)
    out: dict[str, Claim] = {}
    free: list[str] = []
    for _, job_id, running, mine, attempts, other in rows:
        if job_id is None:
            continue
        if running or other or (mine and lease > 1):
            out[job_id] = Claim(int(attempts), True)
        elif mine:
            out[job_id] = Claim(int(attempts) + 1, False, lease, hold)
        else:
            free.append(job_id)
    if free:
        taken = conn.execute(TAKE_OVER, {"b": batch_id, "ids": pgarray.uuids(free),
                                         "queued": JobStatus.QUEUED.value})
        for job_id, attempts in taken:
            out[job_id] = Claim(int(attempts) + 1, False, lease, hold)
        # changed meanwhile (ended, or taken by another batch): count_attempt decides
        out.update({j: Claim(0, True) for j in free if j not in out})
    return out


# A suspect about to run alone: a running job, or one held by a claimed batch (whose attempt
# died: it is counted here, with a lease for it as if it had been written at its claim).
COUNT_ATTEMPT = text(
    "WITH prev AS (SELECT j.job_id, "
    "  j.attempts + CASE WHEN j.status = CAST(:queued AS job_status) THEN 1 ELSE 0 END AS was, "
    "  CASE WHEN j.status = CAST(:queued AS job_status) THEN 2 ELSE 1 END AS bump "
    "  FROM jobs j WHERE j.job_id = CAST(:id AS uuid) "
    "  AND (j.status = CAST(:running AS job_status) OR (j.status = CAST(:queued AS job_status) "
    "       AND EXISTS (SELECT 1 FROM batches b WHERE b.batch_id = j.batch_id))) FOR UPDATE) "
    "UPDATE jobs AS j SET status = CAST(:running AS job_status), updated_at = now(), "
    "  started_at = now(), lease = j.lease + prev.bump, "
    "  attempts = prev.was + CASE WHEN prev.was < :lim THEN 1 ELSE 0 END "
    "FROM prev WHERE j.job_id = prev.job_id RETURNING j.attempts, prev.was < :lim, j.lease"
)


def count_attempt(conn: Connection, job_id: str, max_attempts: int
                  ) -> tuple[int, bool, int] | None:
    """Count one attempt for a suspect about to run on its own, unless it has used all of them;
    the job becomes ``running`` in ``jobs`` under a new lease of its own. Returns (attempts,
    may_run, lease), or None when the job is neither running nor held by a claimed batch."""
    row = conn.execute(COUNT_ATTEMPT, {"id": job_id, "lim": max_attempts,
                                       "running": JobStatus.RUNNING.value,
                                       "queued": JobStatus.QUEUED.value}).first()
    return None if row is None else (int(row[0]), bool(row[1]), int(row[2]))


# The effective status, start and attempts of ``jobs j`` LEFT JOINed to ``batches b`` on
# ``HELD_JOIN`` (what the ``job_state`` view shows), for the ledger's own readers and the reaper.
HELD_JOIN = "LEFT JOIN batches b ON b.batch_id = j.batch_id AND j.status = 'queued'"
STATUS = "CASE WHEN b.batch_id IS NOT NULL THEN 'running' ELSE j.status::text END"
STARTED_AT = "coalesce(j.started_at, b.started_at)"
ATTEMPTS = "j.attempts + CASE WHEN b.batch_id IS NOT NULL THEN 1 ELSE 0 END"
