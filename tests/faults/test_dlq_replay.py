"""`agentq dlq replay`: dead-lettered jobs come back as new attempts, recorded as replays, and
replaying twice never runs a job twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from tests.faults.harness import digits_jobs, dlq_reasons, marker, produce
from tests.support import REPO, wait_for, wait_terminal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _replay(faulty, *args: str) -> dict:
    env = {**os.environ, **faulty.env}
    out = subprocess.run([sys.executable, "-m", "cli.main", "dlq", "replay", *args], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def _consumed_all(s) -> bool:
    from ops.lag import LagReader

    reader = LagReader(s.kafka)
    try:
        parts = reader.read()
        return bool(parts) and all(p.lag == 0 for p in parts)
    finally:
        reader.close()


def _rows(db, ids):
    with db.connect() as conn:
        return {r[0]: r for r in conn.execute(text(
            "SELECT j.job_id::text, j.status::text, j.attempts, j.replays, "
            "(SELECT count(*) FROM results r WHERE r.job_id = j.job_id) FROM jobs j "
            "WHERE j.job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": list(ids)})}


def test_failed_jobs_replay_once_as_new_attempts(faulty, worker_db):
    # Given two jobs that failed for good (inference raised three times) with DLQ copies,
    s = faulty.settings
    tag = marker()
    sick = faulty.worker(extra_env={"AGENTQ_FAILPOINT": f"worker.item:{tag}:raise"})
    faulty.bridge("--max-batch", "8")
    poison = digits_jobs(2, marker=tag)
    good = digits_jobs(10)
    produce(s, poison + good)
    ids = [j.job_id for j in poison]
    wait_terminal(worker_db, [j.job_id for j in poison + good], 120)
    assert {r[1] for r in _rows(worker_db, ids).values()} == {"failed"}
    dlq_reasons(s, 2)
    # when the cause is fixed (a healthy worker) and a dry run counts what would be replayed,
    sick.stop()
    faulty.worker()
    dry = _replay(faulty, "--reason", "INFERENCE_FAILED")
    assert dry["jobs"] == 2 and dry["applied"] is False
    assert {r[1] for r in _rows(worker_db, ids).values()} == {"failed"}  # a dry run did nothing
    # and the replay is applied,
    assert _replay(faulty, "--reason", "INFERENCE_FAILED", "--apply")["applied"] is True
    # then both jobs succeed, once each, recorded as one replay with a fresh attempt count,
    wait_for(lambda: {r[1] for r in _rows(worker_db, ids).values()} == {"succeeded"}, 120,
             what="replayed jobs to succeed")
    rows = _rows(worker_db, ids)
    assert {(r[2], r[3], r[4]) for r in rows.values()} == {(1, 1, 1)}, rows
    # and replaying again (the DLQ still holds the copies) runs nothing twice.
    _replay(faulty, "--reason", "INFERENCE_FAILED", "--apply")
    wait_for(lambda: _consumed_all(s), 60, what="the bridge to consume and commit the replay")
    rows = _rows(worker_db, ids)
    assert {(r[1], r[2], r[3], r[4]) for r in rows.values()} == {("succeeded", 1, 1, 1)}, rows
