"""The whole path on live services: Kafka → bridge → Celery worker → ONNX Runtime → Postgres."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from kafka import KafkaConsumer
from sklearn.datasets import load_digits
from sqlalchemy import text

from producers.contract import JobMessage
from producers.producer import JobProducer
from tests.support import rows_for_source, wait_for, wait_terminal

pytestmark = pytest.mark.integration


def _dlq_records(settings, expected: int, timeout_s: float = 30.0):
    consumer = KafkaConsumer(settings.kafka.dlq_topic, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000, group_id=None,
                             **settings.kafka.client_options())
    got = []
    try:
        def enough():
            got.extend(consumer)
            return len(got) >= expected
        wait_for(enough, timeout_s, what="DLQ records")
    finally:
        consumer.close()
    return got


def test_digits_jobs_flow_end_to_end_and_bad_records_are_rejected(stack, worker_db):
    # Given a bridge and one Celery worker on an isolated topic and queue,
    s = stack.settings
    stack.worker(concurrency=1)
    stack.bridge()
    digits = load_digits()
    n = 300
    jobs = [JobMessage.new("digits-mlp", {"pixels": digits.data[i].tolist()}, tenant="acme")
            for i in range(n)]
    # when good jobs and malformed records are produced,
    bad_records = [
        b"{not json",
        b"\xff\xfe\xfa",
        json.dumps({"v": 1, "model": "digits-mlp", "input": {"pixels": [0] * 64}}).encode(),
        json.dumps({"v": 1, "job_id": str(uuid.uuid4()), "model": "nope",
                    "input": {}}).encode(),
        json.dumps({"v": 1, "job_id": str(uuid.uuid4()), "model": "digits-mlp",
                    "input": {"pixels": [0] * 64}, "deadline_ms": 1000}).encode(),
        b"{" + b'"a":[' * 40 + b"1" + b"]" * 40 + b"}",
    ]
    with JobProducer(s.kafka, s.limits) as producer:
        for i, job in enumerate(jobs):
            producer.send(job)
            if i % 50 == 0 and i // 50 < len(bad_records):
                producer.send_raw(bad_records[i // 50])
        producer.flush()

    # then every job succeeds with the right digit for nearly all of them,
    statuses = wait_terminal(worker_db, [j.job_id for j in jobs], timeout_s=120)
    assert set(statuses.values()) == {"succeeded"}, stack.logs()
    with worker_db.connect() as conn:
        res = conn.execute(text(
            "SELECT r.job_id::text, r.label, r.probs, j.produced_at, j.received_at, "
            "j.queued_at, j.started_at, j.finished_at, j.tenant, j.attempts FROM results r "
            "JOIN jobs j USING (job_id) WHERE r.job_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [j.job_id for j in jobs]}).all()
    assert len(res) == n
    label_of = {j.job_id: int(digits.target[i]) for i, j in enumerate(jobs)}
    accuracy = np.mean([r.label == label_of[r.job_id] for r in res])
    assert accuracy > 0.9
    for r in res:
        assert len(r.probs) == 10 and abs(sum(r.probs) - 1) < 1e-3
        assert r.produced_at <= r.received_at <= r.queued_at <= r.started_at <= r.finished_at
        assert r.tenant == "acme" and r.attempts == 1

    # and every bad record is one rejected/expired ledger row with a reason, and on the DLQ.
    def all_rows():
        rows = rows_for_source(worker_db, s.kafka.jobs_topic)
        return rows if len(rows) == n + len(bad_records) else None

    rows = wait_for(all_rows, 30, what="ledger rows for every record")
    reasons = sorted(r["reason"] for r in rows if r["status"] in ("rejected", "expired"))
    assert reasons == sorted(["MALFORMED_JSON", "NOT_UTF8", "SCHEMA", "UNKNOWN_MODEL", "EXPIRED",
                              "TOO_DEEP"])
    dlq = _dlq_records(s, len(bad_records))
    dlq_reasons = sorted(dict(m.headers)["reason"].decode() for m in dlq)
    assert dlq_reasons == reasons
    assert {m.value for m in dlq} >= {b"{not json", b"\xff\xfe\xfa"}
    assert all(p.alive() for p in stack.procs), stack.logs()
