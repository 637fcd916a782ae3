"""Fenced attempts: a worker that is slow, not dead, races the reaper. Whatever the reaper
decided while the worker stalled stands; the stalled attempt lands nothing (no result row, no
status change), and results exist only for succeeded jobs."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.faults.harness import digits_jobs, marker, produce
from tests.support import wait_for, wait_terminal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _row(db, job_id):
    """The job's effective status (``job_state``: a job held by a batch claim is running)."""
    with db.connect() as conn:
        return conn.execute(text(
            "SELECT s.status::text, j.reason, s.attempts, j.lease, count(r.job_id) AS results "
            "FROM jobs j JOIN job_state s USING (job_id) LEFT JOIN results r USING (job_id) "
            "WHERE j.job_id = :id GROUP BY j.job_id, s.status, s.attempts"),
            {"id": job_id}).one()


def test_a_slow_worker_cannot_land_a_job_the_reaper_already_failed(faulty, worker_db):
    # Given a worker that stalls 12 s on a marked job (its own task limit is long), and a
    # bridge whose reaper takes over jobs untouched for 3 s and allows one attempt,
    s = faulty.settings
    tag = marker()
    faulty.worker(extra_env={"AGENTQ_FAILPOINT": f"worker.item:{tag}:sleep12",
                             "AGENTQ_WORKER_LEASE_S": "120", "AGENTQ_WORKER_MAX_ATTEMPTS": "1"})
    faulty.bridge(extra_env={"AGENTQ_WORKER_LEASE_S": "3", "AGENTQ_WORKER_MAX_ATTEMPTS": "1"})
    (slow,) = digits_jobs(1, marker=tag)
    # when the marked job is claimed and stalls past its lease,
    produce(s, [slow])
    wait_for(lambda: _row(worker_db, slow.job_id).status == "running" if _in(worker_db, slow)
             else None, 60, what="the slow job to be claimed")
    # then the reaper fails it (it used its only attempt) with a DLQ copy,
    assert wait_terminal(worker_db, [slow.job_id], 60)[slow.job_id] == "failed"
    row = _row(worker_db, slow.job_id)
    assert row.reason == "WORKER_CRASHED" and row.results == 0
    # and when the stalled attempt finishes, it is fenced out: still failed, no result row.
    wait_for(lambda: '"fenced": 1' in faulty.logs() or "fenced=1" in faulty.logs(), 60,
             what="the stalled batch to finish (its batch_done says fenced 1)")
    row = _row(worker_db, slow.job_id)
    assert (row.status, row.reason, row.results) == ("failed", "WORKER_CRASHED", 0), row


def test_a_taken_over_batch_lands_once_from_the_attempts_that_hold_it(faulty, worker_db):
    # Given a worker (two processes) whose first batch stalls 8 s, once, and a reaper that
    # takes over jobs untouched for 3 s (three attempts allowed),
    s = faulty.settings
    faulty.worker(concurrency=2,
                  extra_env={"AGENTQ_FAILPOINT": "worker.mid_inference:1:sleep8",
                             "AGENTQ_WORKER_LEASE_S": "120"})
    faulty.bridge(extra_env={"AGENTQ_WORKER_LEASE_S": "3"})
    jobs = digits_jobs(20)
    # when the stalled batch's jobs are taken over (new leases) and run again by the other
    # process while the first attempt still sleeps,
    produce(s, jobs)
    ids = [j.job_id for j in jobs]
    st = wait_terminal(worker_db, ids, 120)
    # then every job succeeds with exactly one result row,
    assert set(st.values()) == {"succeeded"}, (st, faulty.logs()[-3000:])
    with worker_db.connect() as conn:
        rows = conn.execute(text(
            "SELECT j.attempts, j.lease, (SELECT count(*) FROM results r "
            "WHERE r.job_id = j.job_id) FROM jobs j WHERE j.job_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": ids}).all()
    assert all(r[2] == 1 for r in rows)
    # the taken-over jobs ran a second attempt under a newer lease,
    assert any(r[0] == 2 and r[1] >= 3 for r in rows), rows
    # and the stalled attempt, when it woke, landed nothing (it was fenced out).
    wait_for(lambda: '"fenced": ' in faulty.logs() and '"fenced": 0' not in _last_fenced(faulty),
             60, what="the stalled batch to finish fenced")


def _last_fenced(faulty) -> str:
    lines = [ln for ln in faulty.logs().splitlines() if '"fenced": ' in ln]
    worst = max(lines, key=lambda ln: int(ln.split('"fenced": ')[1].split(",")[0]))
    return '"fenced": ' + worst.split('"fenced": ')[1].split(",")[0]


def _in(db, job) -> bool:
    with db.connect() as conn:
        return conn.execute(text("SELECT 1 FROM jobs WHERE job_id = :id"),
                            {"id": job.job_id}).first() is not None
