"""Retry policy pieces: backoff with full jitter, retry batches, DLQ copies as a side concern."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

from producers.dlq import dead_letter, dlq_value
from workers.batch import JobBatch
from workers.retry import backoff_s, retry_batch_id


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap():
    random.seed(1)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0)]:
        samples = [backoff_s(attempt) for _ in range(300)]
        assert all(0 <= x <= ceiling for x in samples)
        assert max(samples) > ceiling * 0.8 and min(samples) < ceiling * 0.2  # jittered


def test_retry_batch_keeps_only_the_wire_fields_of_the_retried_jobs():
    batch = JobBatch("batch-1", "digits-mlp", ["a", "b", "c"], [{"x": 1}, {"x": 2}, {"x": 3}],
                     [5, None, None], [{"tenant": "t"}] * 3)
    again = batch.only(["c", "a"], retry_batch_id(batch.batch_id, 2))
    p = again.to_payload()
    assert p == {"v": 1, "batch_id": "batch-1~r2", "model": "digits-mlp", "job_ids": ["a", "c"],
                 "inputs": [{"x": 1}, {"x": 3}], "deadlines_ms": [5, None]}
    json.dumps(p)  # JSON only on every queue
    assert JobBatch.from_payload(p) == again
    assert retry_batch_id(p["batch_id"], 3) == "batch-1~r3"


def test_dlq_copy_is_a_replayable_job_message_with_every_v1_field():
    deadline = datetime(2030, 1, 2, tzinfo=UTC)
    row = {"job_id": "7f9c2b1e-2d4a-4c7e-9a55-0d2f5f1e9b10", "model": "digits-mlp",
           "input": {"pixels": [0]}, "tenant": "t", "priority": 3, "deadline_at": deadline,
           "meta": {"trace": "x"}}
    assert json.loads(dlq_value(row)) == {
        "v": 1, "job_id": row["job_id"], "model": "digits-mlp", "input": {"pixels": [0]},
        "tenant": "t", "priority": 3, "deadline_ms": int(deadline.timestamp() * 1000),
        "meta": {"trace": "x"}}


class _Future:
    def __init__(self, ok):
        self.ok = ok

    def get(self, timeout):
        if not self.ok:
            raise TimeoutError("no broker")


class _DLQ:
    def __init__(self, ok=True):
        self.ok, self.sent = ok, []

    def send(self, value, reason, detail, **kw):
        self.sent.append((value, reason, detail, kw))
        return _Future(self.ok)


def test_dead_letter_sends_reason_and_source_coordinates():
    dlq = _DLQ()
    rows = [{"job_id": "j", "model": "m", "input": {}, "reason": "WORKER_CRASHED",
             "error": "boom", "source_topic": "t", "source_partition": 1, "source_offset": 7}]
    assert dead_letter(dlq, rows) == ["j"]
    (_, reason, detail, kw), = dlq.sent
    assert (reason, detail) == ("WORKER_CRASHED", "boom")
    assert kw == {"topic": "t", "partition": 1, "offset": 7, "job_id": "j"}


def test_a_failing_dlq_never_fails_the_job():
    rows = [{"job_id": "j", "model": "m", "input": {}, "reason": "R", "error": "e"}]
    assert dead_letter(_DLQ(ok=False), rows) == []
    assert dead_letter(None, rows) == []
