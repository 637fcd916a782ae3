"""The reaper on the live ledger, with a recording stand-in for Celery (one pass, no workers)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from ops.reaper import Reaper
from storage.ledger import insert_jobs
from workers.batch import JobBatch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class RecordingCelery:
    def __init__(self):
        self.sent = []

    def send_task(self, name, args, queue, **_kw):
        self.sent.append((name, args[0], queue))


QUEUE = f"tq-{uuid.uuid4().hex[:8]}.cpu"


def _job(status, attempts=0, deadline=None, model="digits-mlp", queue=QUEUE):
    return {"job_id": str(uuid.uuid4()), "model": model, "status": status, "attempts": attempts,
            "input": {"pixels": [1.0] * 64}, "queue": queue, "deadline_at": deadline,
            "source_topic": "agentq.test.reaper"}


def test_reaper_requeues_stuck_jobs_from_the_ledger_and_fails_exhausted_ones(
        migrated, worker_db):
    # Given live jobs untouched for 10 minutes: queued, running with attempts left, running
    # with none left, past their deadline; and one fresh queued job,
    s = replace(migrated, worker=replace(migrated.worker, max_attempts=3, lease_s=60),
                bridge=replace(migrated.bridge, max_batch=2))
    stuck = [_job("queued"), _job("queued"), _job("queued"), _job("running", attempts=1)]
    exhausted = _job("running", attempts=3)
    late = _job("queued", deadline=datetime.now(UTC) - timedelta(minutes=1))
    # on a queue that still holds a backlog: a queued one whose message waits in it, a queued
    # and a running one whose messages are gone, and one exhausted there,
    busy_q = f"tq-busy-{uuid.uuid4().hex[:8]}.cpu"
    waiting = [_job("queued", queue=busy_q)]
    lost_in_busy = [_job("queued", queue=busy_q), _job("running", attempts=1, queue=busy_q)]
    exhausted_busy = _job("running", attempts=3, queue=busy_q)
    fresh = _job("queued")
    everyone = [*stuck, exhausted, late, *waiting, *lost_in_busy, exhausted_busy, fresh]
    ids = [j["job_id"] for j in everyone]
    with worker_db.begin() as conn:
        insert_jobs(conn, everyone)
        conn.execute(text("UPDATE jobs SET updated_at = now() - interval '10 minutes' "
                          "WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids[:-1]})
    celery = RecordingCelery()
    reaper = Reaper(s, worker_db, celery)
    from workers.app import make_celery
    from workers.queues import publish as publish_batch

    real = make_celery(s)
    publish_batch(real, JobBatch.from_ledger_rows("digits-mlp", waiting, "backlog"), busy_q)
    reaper.redis.rpush(busy_q, "a message of another app ahead of them")
    # when the reaper runs once,
    try:
        st = reaper.reap_once()
    except BaseException:
        reaper.redis.delete(busy_q)
        raise
    # then the stuck jobs are re-published in batches of max_batch from their ledger input,
    batches = [(name, JobBatch.from_payload(payload), queue)
               for name, payload, queue in celery.sent]
    sent_ids = [j for _, batch, _ in batches for j in batch.job_ids]
    mine = {j["job_id"] for j in stuck}
    assert mine <= set(sent_ids) and fresh["job_id"] not in sent_ids
    # exactly the lost ones of the busy queue too, never the one whose message still waits,
    assert {j["job_id"] for j in lost_in_busy} <= set(sent_ids)
    assert not {j["job_id"] for j in [*waiting, exhausted_busy]} & set(sent_ids)
    for name, batch, queue in batches:
        assert name == "agentq.run_batch" and len(batch) <= 2
        if set(batch.job_ids) & mine:
            assert queue == QUEUE and batch.model == "digits-mlp"
            assert all(inp == {"pixels": [1.0] * 64} for inp in batch.inputs)
    assert st.requeued >= 6 and st.failed >= 2 and st.expired >= 1
    with worker_db.connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT job_id::text, status::text || ':' || coalesce(reason, '') FROM jobs "
            "WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}).all())
    # the exhausted one is failed, the late one expired, the running one stays running
    # (the worker runs it alone and counts its attempt),
    assert rows[exhausted["job_id"]] == "failed:WORKER_CRASHED"
    assert rows[exhausted_busy["job_id"]] == "failed:WORKER_CRASHED"
    assert [rows[j["job_id"]] for j in waiting + lost_in_busy] == ["queued:", "queued:",
                                                                    "running:"]
    assert rows[late["job_id"]] == "expired:EXPIRED"
    assert rows[stuck[3]["job_id"]] == "running:"
    # and their lease is renewed: an immediate second pass re-publishes none of them.
    celery.sent.clear()
    try:
        reaper.reap_once()
        again = {j for _, p, _ in celery.sent for j in JobBatch.from_payload(p).job_ids}
        assert not again & set(ids)
    finally:  # leave nothing live for the reapers of later tests
        reaper.redis.delete(busy_q)
        reaper.close()
        with worker_db.begin() as conn:
            conn.execute(text("UPDATE jobs SET status = 'failed', reason = 'TEST_CLEANUP' "
                              "WHERE job_id = ANY(CAST(:ids AS uuid[])) "
                              "AND status IN ('queued', 'running')"), {"ids": ids})


def test_jobs_of_a_queue_no_live_worker_consumes_are_rerouted_to_one_that_is(stack, worker_db):
    # Given jobs stuck on the `gpu` queue, where no worker lives, and a live `cpu` worker,
    from dataclasses import replace as _replace

    from workers.app import make_celery

    s = stack.settings
    stack.worker(queues="cpu", concurrency=1)
    gpu_q, cpu_q = s.queue_prefix + "gpu", s.queue_prefix + "cpu"
    jobs = [_job("queued", queue=gpu_q) for _ in range(5)]
    ids = [j["job_id"] for j in jobs]
    with worker_db.begin() as conn:
        insert_jobs(conn, jobs)
        conn.execute(text("UPDATE jobs SET updated_at = now() - interval '10 minutes' "
                          "WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids})
    celery = make_celery(s)
    from tests.support import wait_for

    wait_for(lambda: celery.control.inspect(timeout=1).active_queues(), 60,
             what="the cpu worker to answer")
    # when the reaper runs,
    reaper = Reaper(_replace(s, worker=_replace(s.worker, lease_s=60)), worker_db, celery)
    try:
        reaper.reap_once()
    finally:
        reaper.close()
    # then the jobs run on `cpu` and the ledger says where they went.
    from tests.support import wait_terminal

    assert set(wait_terminal(worker_db, ids, 60).values()) == {"succeeded"}, stack.logs()
    with worker_db.connect() as conn:
        queues = {r[0] for r in conn.execute(text(
            "SELECT queue FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids})}
    assert queues == {cpu_q}


def test_an_owed_dlq_copy_is_claimed_by_one_sender_and_sent_once(stack, worker_db):
    # Given failed jobs whose DLQ copies were never acknowledged: two whose sender's window
    # has long passed, and one that failed a moment ago (its worker may still be sending it),
    import threading

    from tests.faults.harness import dlq_reasons

    s = stack.settings
    owed = [_job("failed"), _job("failed")]
    sending = _job("failed")
    ids = [j["job_id"] for j in [*owed, sending]]
    with worker_db.begin() as conn:
        insert_jobs(conn, [{**j, "reason": "INFERENCE_FAILED"} for j in [*owed, sending]])
        conn.execute(text("UPDATE jobs SET finished_at = now() - interval '20 years' "
                          "WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids[:2]})
        conn.execute(text("UPDATE jobs SET finished_at = now() "
                          "WHERE job_id = CAST(:id AS uuid)"), {"id": ids[2]})
    # when two reapers look for owed copies at once, twice each,
    reapers = [Reaper(s, worker_db, RecordingCelery()) for _ in range(2)]
    barrier = threading.Barrier(2)

    def sweep(r):
        barrier.wait()
        r.send_owed_dead_letters()
        r.send_owed_dead_letters()

    threads = [threading.Thread(target=sweep, args=(r,)) for r in reapers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for r in reapers:
            r.close()
    # then each old copy is on the DLQ exactly once, the one still being sent is left to its
    # sender, and the ledger records the acknowledged ones.
    from kafka import KafkaConsumer

    dlq_reasons(s, 2)
    consumer = KafkaConsumer(s.kafka.dlq_topic, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000, group_id=None,
                             **s.kafka.client_options())
    try:
        copies = [dict(m.headers).get("job_id", b"").decode() for m in consumer]
    finally:
        consumer.close()
    mine = [c for c in copies if c in ids]
    assert sorted(mine) == sorted(ids[:2])
    with worker_db.connect() as conn:
        acked = dict(conn.execute(text(
            "SELECT job_id::text, dlq_at IS NOT NULL FROM jobs "
            "WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}).all())
    assert acked == {ids[0]: True, ids[1]: True, ids[2]: False}
