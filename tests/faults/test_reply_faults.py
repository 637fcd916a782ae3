"""Fault rows of the reply path (invariant 9): a worker killed between its result commit and the
reply's publish, a relay killed between its publish and marking the outbox sent. The reply
arrives in both, at least once, every copy with the same content."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import defaultdict

import pytest
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import text

from producers.client import JobClient
from producers.topics import delete_topics, ensure_reply_topic
from tests.faults.harness import digits_jobs, marker
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _unsent(db, ids) -> int:
    with db.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM replies WHERE job_id = ANY(CAST(:ids AS uuid[])) "
            "AND sent_at IS NULL"), {"ids": list(ids)}).scalar_one()


def _events_on(settings, topic):
    """Every event on ``topic`` up to its current end, by job_id (duplicates kept)."""
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False,
                             **settings.kafka.client_options())
    seen: dict[str, list[dict]] = defaultdict(list)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1000).values():
                for m in records:
                    seen[m.key.decode()].append(json.loads(m.value))
    finally:
        consumer.close()
    return seen


def test_worker_killed_after_its_result_commit_still_replies(faulty, worker_db):
    # Given a worker whose pool process SIGKILLs itself right after committing the results of
    # its first batch (once across forks), a bridge with its relay, and a client,
    s = faulty.settings
    faulty.worker(extra_env={"AGENTQ_FAILPOINT": "worker.after_commit:1:crash"})
    faulty.bridge("--max-batch", "16")
    jobs = digits_jobs(64)
    with JobClient(s, db_url=s.worker_database_url) as client:
        # when the jobs run and the first batch's process dies before anything else happens,
        handles = client.submit_many(jobs)
        results = client.wait(handles, timeout=120)
    # then the point fired, and every job still got its reply, succeeded, including the batch
    # whose worker died (its outbox rows were committed with its results).
    fired = faulty.env["AGENTQ_FAILPOINT_ONCE_DIR"] + "/worker.after_commit.fired"
    assert os.path.exists(fired), faulty.logs()
    assert {r.status for r in results} == {"succeeded"}, faulty.logs()
    assert sorted(r.job_id for r in results) == sorted(j.job_id for j in jobs)
    assert _unsent(worker_db, [j.job_id for j in jobs]) == 0


def test_relay_killed_between_publish_and_commit_replies_again_with_the_same_content(
        faulty, worker_db):
    # Given a bridge without its relay thread, and a stand-alone relay that SIGKILLs itself
    # after publishing its first batch but before marking it sent,
    s = faulty.settings
    faulty.env["AGENTQ_REPLY_RELAY"] = "0"
    topic = f"{s.kafka.jobs_topic}.replies"
    ensure_reply_topic(s.kafka, topic)
    faulty.worker()
    faulty.bridge()
    jobs = digits_jobs(40)
    relay = faulty.start("relay", [sys.executable, "-m", "cli.main", "relay"],
                         {"AGENTQ_FAILPOINT": "relay.before_mark:1:crash"})
    try:
        with JobClient(s, reply_topic=topic) as client:
            handles = client.submit_many(jobs)
            # when it dies, and a fresh relay takes over,
            wait_for(lambda: not relay.alive(), 90, what="the relay to hit its failpoint")
            assert relay.popen.returncode == -signal.SIGKILL, faulty.logs()
            faulty.start("relay", [sys.executable, "-m", "cli.main", "relay"])
            results = client.wait(handles, timeout=90)
        ids = [j.job_id for j in jobs]
        wait_for(lambda: _unsent(worker_db, ids) == 0, 60, what="the outbox marked sent")
        events = _events_on(s, topic)
    finally:
        delete_topics(s.kafka, [topic])
    # then every job got its reply, and the batch published twice carries equal copies.
    assert {r.status for r in results} == {"succeeded"}, faulty.logs()
    assert set(ids) <= set(events)
    copies = [evs for evs in events.values() if len(evs) > 1]
    assert copies, "the killed relay's batch should have been published again"
    assert all(all(e == evs[0] for e in evs) for evs in copies)


def test_a_job_that_fails_in_inference_replies_failed_with_its_reason(faulty):
    # Given a worker on which every job carrying a marker raises, with one attempt per job,
    s = faulty.settings
    poison = marker()
    faulty.worker(extra_env={"AGENTQ_FAILPOINT": f"worker.item:{poison}:raise",
                             "AGENTQ_WORKER_MAX_ATTEMPTS": "1"})
    faulty.bridge()
    bad = digits_jobs(2, marker=poison)
    good = digits_jobs(6)
    with JobClient(s) as client:
        # when they run in batches with good jobs,
        results = {r.job_id: r for r in client.wait(client.submit_many(bad + good), timeout=90)}
    # then the bad ones reply failed with INFERENCE_FAILED and no result, the others succeed.
    assert {(results[j.job_id].status, results[j.job_id].reason) for j in bad} == {
        ("failed", "INFERENCE_FAILED")}, faulty.logs()
    assert all(results[j.job_id].result is None for j in bad)
    assert {results[j.job_id].status for j in good} == {"succeeded"}
