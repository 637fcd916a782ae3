"""``running`` once per batch (``storage.batches``) on live PostgreSQL: a claim writes one batch
row and no job row; SQL still sees its jobs running; every takeover fences the claim out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from storage.batches import claim_batch, count_attempt
from storage.ledger import fail_jobs, finish_jobs, queue_jobs, requeue_jobs
from storage.queries import job_report, open_jobs
from storage.recovery import take_stuck

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MODEL = f"claims-test-{uuid.uuid4().hex[:8]}"  # a model name no other test uses


def _queue(db, n, batch_id, topic="agentq.test.claims", model=MODEL):
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with db.begin() as conn:
        queue_jobs(conn, [{"job_id": j, "model": model, "input": {"pixels": [1.0] * 64},
                           "batch_id": batch_id, "queue": "agentq.test.claims",
                           "source_topic": topic, "source_partition": 0,
                           "source_offset": i} for i, j in enumerate(ids)])
    return ids


def _rows(db, ids):
    with db.connect() as conn:
        rows = conn.execute(text(
            "SELECT j.job_id::text, j.status::text, j.attempts, j.lease, j.started_at, "
            "  j.batch_id, j.xmin::text AS version, s.status::text AS effective, "
            "  s.attempts AS effective_attempts, (SELECT count(*) FROM results r "
            "  WHERE r.job_id = j.job_id) AS results "
            "FROM jobs j JOIN job_state s USING (job_id) "
            "WHERE j.job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}).all()
    return {r.job_id: r for r in rows}


def _claimed(db, n, at):
    """(batch_id, job ids, claims): ``n`` jobs queued in a batch the bridge wrote, claimed."""
    batch = f"b-{uuid.uuid4()}"
    ids = _queue(db, n, batch)
    with db.begin() as conn:
        return batch, ids, claim_batch(conn, batch, MODEL, ids, at)


def _finish(db, claims, ids, at):
    hold = claims[ids[0]].hold
    with db.begin() as conn:
        return finish_jobs(conn, [{"job_id": j, "model": MODEL, "label": 1, "probs": [1.0],
                                   "lease": claims[j].lease} for j in ids], at, hold)


def test_a_claim_holds_its_batch_without_writing_a_job_row_and_sql_sees_them_running(
        worker_db):
    # Given a batch of three queued jobs, as the bridge writes them,
    batch = f"b-{uuid.uuid4()}"
    tag = uuid.uuid4().hex[:8]  # this test's own topic and model: counts of its jobs only
    topic, model = f"agentq.test.claims-{tag}", f"{MODEL}-{tag}"
    ids = _queue(worker_db, 3, batch, topic, model)
    before = _rows(worker_db, ids)
    # when a worker claims the batch,
    t = datetime.now(UTC).replace(microsecond=0)
    with worker_db.begin() as conn:
        claims = claim_batch(conn, batch, model, ids, t)
    # then each job is held by the claim (first attempt, not a suspect),
    assert {j: (c.attempts, c.suspect, c.hold.batch_id if c.hold else None)
            for j, c in claims.items()} == {j: (1, False, batch) for j in ids}
    # and no job row was written (same row versions), yet SQL reads them as running,
    during = _rows(worker_db, ids)
    assert all(during[j].version == before[j].version for j in ids)
    assert {(r.status, r.effective, r.effective_attempts) for r in during.values()} == {
        ("queued", "running", 1)}
    with worker_db.connect() as conn:
        counts = dict(conn.execute(text("SELECT status::text, jobs FROM job_status_counts "
                                        "WHERE model = :m"), {"m": model}).all())
        report = job_report(conn, ids[0])
        open_now = open_jobs(conn, topic)
    assert counts.get("running") == 3 and "queued" not in counts
    assert open_now == {"running": 3}
    assert report["status"] == "running" and report["attempts"] == 1
    assert report["started_at"] == t
    # and when the batch lands, the write that ends each job records its start and attempt.
    assert _finish(worker_db, claims, ids, t + timedelta(seconds=1)) == 3
    after = _rows(worker_db, ids)
    assert {(r.status, r.attempts, r.lease, r.started_at, r.results)
            for r in after.values()} == {("succeeded", 1, 1, t, 1)}


def test_a_redelivered_batch_runs_its_jobs_alone_and_fences_the_first_delivery_out(worker_db):
    # Given a batch claimed by a delivery that then went silent (its worker died, or stalls),
    t = datetime.now(UTC)
    batch, ids, first = _claimed(worker_db, 2, t)
    # when the same batch is delivered again,
    with worker_db.begin() as conn:
        again = claim_batch(conn, batch, MODEL, ids, t)
    # then its jobs are suspects, each counted alone: the dead claim's attempt and its own,
    assert all(c.suspect and c.hold is None for c in again.values())
    with worker_db.begin() as conn:
        counted = count_attempt(conn, ids[0], max_attempts=3)
        exhausted = count_attempt(conn, ids[1], max_attempts=1)
    assert counted is not None and counted[:2] == (2, True)
    assert exhausted is not None and exhausted[:2] == (1, False)
    # and the first delivery's late outcome lands nothing: neither results nor a failure,
    assert _finish(worker_db, first, ids[:1], t) == 0
    with worker_db.begin() as conn:
        assert fail_jobs(conn, [(ids[1], "INFERENCE_FAILED", "late")], t,
                         {ids[1]: first[ids[1]].lease}, first[ids[1]].hold) == []
    rows = _rows(worker_db, ids)
    assert {(r.status, r.results) for r in rows.values()} == {("running", 0)}
    # while the attempt that holds the job now lands it.
    with worker_db.begin() as conn:
        assert finish_jobs(conn, [{"job_id": ids[0], "model": MODEL, "label": 1,
                                   "lease": counted[2]}], t) == 1


def test_a_retry_batch_takes_its_jobs_over_and_the_earlier_claim_cannot_land_them(worker_db):
    # Given a claimed batch whose two jobs failed once and were put back to queued,
    t = datetime.now(UTC)
    batch, ids, first = _claimed(worker_db, 2, t)
    with worker_db.begin() as conn:
        assert sorted(requeue_jobs(conn, [(j, "INFERENCE_FAILED", "once") for j in ids],
                                   {j: first[j].lease for j in ids}, first[ids[0]].hold)) \
            == sorted(ids)
    assert {(r.status, r.attempts, r.batch_id, r.effective)
            for r in _rows(worker_db, ids).values()} == {("queued", 1, None, "queued")}
    # when the retry batch is claimed,
    retry = f"{batch}~r1"
    with worker_db.begin() as conn:
        claims = claim_batch(conn, retry, MODEL, ids, t)
    # then it holds both jobs (taken over: their batch is the retry's), second attempt,
    assert {(c.attempts, c.suspect, c.hold.batch_id if c.hold else None)
            for c in claims.values()} == {(2, False, retry)}
    # a second claim of another batch finds them held and treats them as suspects,
    with worker_db.begin() as conn:
        other = claim_batch(conn, f"b-{uuid.uuid4()}", MODEL, ids, t)
    assert all(c.suspect for c in other.values())
    # and only the retry's claim lands them.
    assert _finish(worker_db, first, ids, t) == 0
    assert _finish(worker_db, claims, ids, t) == 2
    assert {(r.status, r.attempts, r.results) for r in _rows(worker_db, ids).values()} == {
        ("succeeded", 2, 1)}


def test_the_reaper_takes_over_a_held_job_whose_claim_outlived_its_lease(worker_db):
    # Given a batch claimed long ago whose worker went silent,
    old = datetime.now(UTC) - timedelta(minutes=10)
    _, ids, first = _claimed(worker_db, 1, old)
    with worker_db.begin() as conn:
        conn.execute(text("UPDATE jobs SET updated_at = :t WHERE job_id = ANY("
                          "CAST(:ids AS uuid[]))"), {"t": old, "ids": ids})
    # when the reaper takes stuck jobs over,
    with worker_db.begin() as conn:
        taken = [r for r in take_stuck(conn, lease_s=60, limit=10_000) if r["job_id"] in ids]
    # then the held job becomes running in its row, its claim's attempt counted,
    assert [(r["status"], r["attempts"]) for r in taken] == [("running", 1)]
    row = _rows(worker_db, ids)[ids[0]]
    assert (row.status, row.lease, row.started_at) == ("running", 2, old)
    # and the silent claim, waking up, lands nothing.
    assert _finish(worker_db, first, ids, datetime.now(UTC)) == 0
    assert _rows(worker_db, ids)[ids[0]].results == 0
