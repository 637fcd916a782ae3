"""Fault matrix, process rows: the bridge or a worker dies (SIGKILL, failpoints), stops (SIGSTOP)
or is asked to stop (SIGTERM). Every row ends with the invariant check."""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import text

from tests.faults.harness import assert_in_flight, check_invariants, digits_jobs, produce
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _attempts(db, ids):
    with db.connect() as conn:
        rows = conn.execute(text("SELECT attempts FROM jobs WHERE job_id = ANY(CAST(:ids AS "
                                 "uuid[]))"), {"ids": list(ids)}).all()
    return [r[0] for r in rows]


def _succeeded(db, topic) -> int:
    with db.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM jobs WHERE source_topic = :t AND "
                                 "status = 'succeeded'"), {"t": topic}).scalar_one()


def test_bridge_killed_between_publish_and_commit_loses_no_job(faulty, worker_db):
    # Given a bridge that SIGKILLs itself right after its 3rd Celery publish (offsets of that
    # batch not committed), and a worker,
    s = faulty.settings
    faulty.worker()
    first = faulty.bridge("--max-batch", "16",
                          extra_env={"AGENTQ_FAILPOINT": "bridge.after_publish:3:crash"})
    jobs = digits_jobs(240)
    produce(s, jobs)
    # when it dies and a new bridge takes over the group,
    wait_for(lambda: not first.alive(), 90, what="the bridge to hit its failpoint")
    assert first.popen.returncode == -signal.SIGKILL, faulty.logs()
    faulty.bridge("--max-batch", "16")
    # then every job ends once, succeeded, with one result row.
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs], len(jobs),
                         timeout_s=120)
    assert v.statuses == {"succeeded": len(jobs)}, faulty.logs()


def test_worker_pool_process_killed_mid_inference_loses_no_job(faulty, worker_db):
    # Given a worker whose pool process SIGKILLs itself in its 2nd batch (once, across forks),
    s = faulty.settings
    faulty.worker(extra_env={"AGENTQ_FAILPOINT": "worker.mid_inference:2:crash"})
    faulty.bridge("--max-batch", "16")
    jobs = digits_jobs(160)
    # when jobs flow,
    produce(s, jobs)
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs], len(jobs),
                         timeout_s=150, max_executions=2)
    # then the batch that was running is redelivered and every job succeeds, the jobs of the
    # killed batch with one more attempt each.
    fired = faulty.env["AGENTQ_FAILPOINT_ONCE_DIR"] + "/worker.mid_inference.fired"
    assert os.path.exists(fired), faulty.logs()
    assert v.statuses == {"succeeded": len(jobs)}, faulty.logs()
    attempts = _attempts(worker_db, [j.job_id for j in jobs])
    assert max(attempts) == 2 and min(attempts) == 1


def test_sigterm_stops_bridge_and_worker_cleanly_and_a_restart_finishes_the_rest(
        faulty, worker_db):
    # Given a bridge and a worker with jobs flowing,
    s = faulty.settings
    worker = faulty.worker()
    bridge = faulty.bridge("--max-batch", "8")
    jobs = digits_jobs(200)
    produce(s, jobs[:100])
    wait_for(lambda: _succeeded(worker_db, s.kafka.jobs_topic) >= 20, 90, what="some progress")
    assert_in_flight(worker_db, s.kafka.jobs_topic, len(jobs))
    # when both get SIGTERM mid-stream,
    bridge.signal(signal.SIGTERM)
    worker.signal(signal.SIGTERM)
    t0 = time.monotonic()
    # then both exit 0 within the timeout,
    assert bridge.popen.wait(30) == 0, faulty.logs()
    assert worker.popen.wait(60) == 0, faulty.logs()
    stop_s = time.monotonic() - t0
    # and after a restart every job ends exactly once.
    produce(s, jobs[100:])
    faulty.worker()
    faulty.bridge("--max-batch", "8")
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs], len(jobs),
                         timeout_s=120)
    assert v.statuses == {"succeeded": len(jobs)}, faulty.logs()
    assert stop_s < 60


def test_worker_main_process_killed_jobs_are_recovered(faulty, worker_db):
    # Given a worker killed with SIGKILL (main and pool processes) while jobs flow,
    s = faulty.settings
    worker = faulty.worker(concurrency=2)
    faulty.bridge("--max-batch", "8")
    jobs = digits_jobs(300)
    produce(s, jobs, pace_s=0.05)
    wait_for(lambda: _succeeded(worker_db, s.kafka.jobs_topic) >= 30, 90, what="some progress")
    worker.signal(signal.SIGKILL)
    worker.popen.wait(10)
    # when a new worker starts, then the unacked and lost batches come back (Celery's
    # visibility timeout or the reaper's lease) and every job ends exactly once.
    faulty.worker(concurrency=2)
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs], len(jobs),
                         timeout_s=180, max_executions=2)
    assert v.statuses == {"succeeded": len(jobs)}, faulty.logs()


def test_bridge_stopped_longer_than_session_timeout_then_continued(faulty, worker_db):
    # Given two bridges in one group (the session timeout is 6 s in FAULT_ENV),
    s = faulty.settings
    faulty.worker()
    frozen = faulty.bridge("--max-batch", "8")
    faulty.bridge("--max-batch", "8")
    jobs = digits_jobs(300)
    produce(s, jobs[:100])
    wait_for(lambda: _succeeded(worker_db, s.kafka.jobs_topic) >= 20, 90, what="some progress")
    assert_in_flight(worker_db, s.kafka.jobs_topic, len(jobs))
    # when one is SIGSTOPped for 3x the session timeout while more jobs arrive, then continued,
    frozen.signal(signal.SIGSTOP)
    try:
        produce(s, jobs[100:200])
        time.sleep(18)
    finally:
        frozen.signal(signal.SIGCONT)
    produce(s, jobs[200:])
    # then the other bridge took over, the frozen one rejoins, and every job ends exactly once.
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs], len(jobs),
                         timeout_s=150)
    assert v.statuses == {"succeeded": len(jobs)}, faulty.logs()
    assert frozen.alive(), faulty.logs()
