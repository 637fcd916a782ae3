"""Fault matrix, bad-job rows: poison jobs (one that raises, one that kills its worker),
malformed records from kcat and from JobProducer.send_raw, duplicate job_ids."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import text

from tests.faults.harness import (
    check_invariants,
    digits_jobs,
    dlq_reasons,
    kcat_produce,
    marker,
    produce,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _rows(db, ids):
    with db.connect() as conn:
        res = conn.execute(text("SELECT job_id::text, status::text, reason, error, attempts "
                                "FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))"),
                           {"ids": list(ids)})
        return {r[0]: r for r in res}


def test_poison_job_that_raises_is_retried_then_fails_alone_with_a_dlq_copy(faulty, worker_db):
    # Given a worker on which inference raises for any job carrying a marker,
    s = faulty.settings
    poison_tag = marker()
    faulty.worker(extra_env={"AGENTQ_FAILPOINT": f"worker.item:{poison_tag}:raise"})
    faulty.bridge("--max-batch", "16")
    good = digits_jobs(120)
    poison = digits_jobs(2, marker=poison_tag)
    # when two poison jobs are mixed into a stream of good ones,
    jobs = good[:60] + poison[:1] + good[60:] + poison[1:]
    produce(s, jobs)
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs], len(jobs),
                         timeout_s=150, max_executions=3)
    # then only the poison jobs fail, after max_attempts (3) tries, with the error kept,
    assert v.statuses == {"succeeded": len(good), "failed": 2}, faulty.logs()
    rows = _rows(worker_db, [j.job_id for j in poison])
    for r in rows.values():
        assert r.status == "failed" and r.reason == "INFERENCE_FAILED" and r.attempts == 3
        assert "failpoint worker.item" in r.error
    # and each has a copy on the DLQ.
    assert dlq_reasons(s, 2) == {"INFERENCE_FAILED": 2}


def test_poison_job_that_kills_its_worker_fails_after_max_attempts(faulty, worker_db):
    # Given a worker whose pool process dies (SIGKILL, like an OOM kill) on a marked job,
    s = faulty.settings
    poison_tag = marker()
    faulty.worker(extra_env={"AGENTQ_FAILPOINT": f"worker.item:{poison_tag}:crash",
                             "AGENTQ_FAILPOINT_ONCE_DIR": ""})
    faulty.bridge("--max-batch", "16")
    good = digits_jobs(100)
    poison = digits_jobs(1, marker=poison_tag)
    jobs = good[:50] + poison + good[50:]
    # when the poison job arrives among good ones,
    produce(s, jobs)
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs], len(jobs),
                         timeout_s=180, max_executions=3)
    # then it does not loop forever: it ends failed (WORKER_CRASHED) after 3 attempts, every
    # good job succeeds, and the poison job has a DLQ copy.
    assert v.statuses == {"succeeded": len(good), "failed": 1}, faulty.logs()
    (r,) = _rows(worker_db, [poison[0].job_id]).values()
    assert (r.status, r.reason, r.attempts) == ("failed", "WORKER_CRASHED", 3), faulty.logs()
    good_attempts = [x.attempts for x in _rows(worker_db, [j.job_id for j in good]).values()]
    assert max(good_attempts) <= 2  # batch-mates ran alone once after the first crash
    assert dlq_reasons(s, 1) == {"WORKER_CRASHED": 1}


def _bad_records() -> dict[str, bytes]:
    return {
        "PAYLOAD_TOO_LARGE": json.dumps({"v": 1, "job_id": str(uuid.uuid4()),
                                         "model": "digits-mlp",
                                         "input": {"pixels": [0] * 64, "pad": "x" * 70_000}}
                                        ).encode(),
        "NOT_UTF8": b'{"v":1,"model":"digits-mlp","input":{"pixels":[\xff\xfe]}}',
        "MALFORMED_JSON": b'{"v":1,"job_id":"' + str(uuid.uuid4()).encode() + b'","model":"dig',
        "TOO_DEEP": b'{"v":1,"meta":' + b'{"a":' * 30 + b"1" + b"}" * 30 + b"}",
        "SCHEMA": json.dumps({"v": 1, "model": "digits-mlp",
                              "input": {"pixels": [0] * 64}}).encode(),  # no job_id
        "UNKNOWN_MODEL": json.dumps({"v": 1, "job_id": str(uuid.uuid4()), "model": "gpt-99",
                                     "input": {"text": "hi"}}).encode(),
    }


@pytest.mark.parametrize("client", ["kcat", "send_raw"])
def test_malformed_records_are_rejected_with_reasons_and_good_jobs_finish(
        faulty, worker_db, client):
    # Given a bridge and a worker,
    s = faulty.settings
    faulty.worker()
    faulty.bridge("--max-batch", "16")
    good = digits_jobs(60)
    bad = _bad_records()
    # when malformed records are produced between good jobs (with kcat or our producer),
    produce(s, good[:30])
    if client == "kcat":
        kcat_produce(s, list(bad.values()))
    else:
        produce(s, [], raw=list(bad.values()))
    produce(s, good[30:])
    # then each bad record is one rejected ledger row with its reason and a DLQ copy, and
    # every good job succeeds.
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in good],
                         len(good) + len(bad), timeout_s=120)
    assert v.statuses == {"succeeded": len(good), "rejected": len(bad)}, faulty.logs()
    assert v.reasons == {k: 1 for k in bad}
    assert dlq_reasons(s, len(bad)) == {k: 1 for k in bad}
    assert all(p.alive() for p in faulty.procs), faulty.logs()


def test_a_job_id_reused_for_other_content_is_refused_and_an_identical_copy_collapses(
        faulty, worker_db):
    # Given jobs each produced twice, the second time with another input (a job_id reused for
    # new work), and jobs produced twice with identical content (a producer's retry),
    s = faulty.settings
    faulty.worker()
    faulty.bridge("--max-batch", "16")
    jobs = digits_jobs(80)
    same = digits_jobs(20)
    from dataclasses import replace

    twins = [replace(j, input={"pixels": [0.0] * 64}) for j in jobs]
    # when every copy flows, some in the same batch, some far apart,
    produce(s, jobs[:40] + twins[:40] + same)
    produce(s, jobs[40:] + same)
    produce(s, twins[40:])
    # then each job_id has one job row with one result, from one of its copies (which one is
    # not ordered: batches are made durable concurrently); the other copy of each reused id is
    # rejected as DUPLICATE_JOB_ID in a row of its own (keyed by its record) with a DLQ copy,
    ids = [j.job_id for j in jobs + same]
    v = check_invariants(worker_db, s.kafka.jobs_topic, ids, len(ids) + len(twins),
                         timeout_s=120)
    assert v.statuses == {"succeeded": len(ids), "rejected": len(twins)}, faulty.logs()
    assert v.reasons == {"DUPLICATE_JOB_ID": len(twins)}
    assert dlq_reasons(s, len(twins)) == {"DUPLICATE_JOB_ID": len(twins)}
    with worker_db.connect() as conn:
        recorded = dict(conn.execute(text(
            "SELECT job_id::text, input FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [j.job_id for j in jobs]}).all())
        attempts = conn.execute(text(
            "SELECT max(attempts) FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": ids}).scalar_one()
    for j, twin in zip(jobs, twins, strict=True):
        assert recorded[j.job_id] in (j.input, twin.input)
    # and nothing ran twice: the identical copies collapsed into their first.
    assert attempts == 1

