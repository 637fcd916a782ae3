"""Retry policy pieces: backoff with full jitter, retry payloads, DLQ copies as a side concern."""

from __future__ import annotations

import json
import random

from workers.retry import backoff_s, dead_letter, dlq_value, retry_batches


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap():
    random.seed(1)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0)]:
        samples = [backoff_s(attempt) for _ in range(300)]
        assert all(0 <= x <= ceiling for x in samples)
        assert max(samples) > ceiling * 0.8 and min(samples) < ceiling * 0.2  # jittered


def test_retry_payload_keeps_only_the_wire_fields():
    jobs = [{"job_id": "a", "input": {"x": 1}, "deadline_ms": 5, "junk": 1},
            {"job_id": "b", "input": {"x": 2}}]
    p = retry_batches("digits-mlp", jobs, "batch-1", 2)
    assert p == {"batch_id": "batch-1~r2", "model": "digits-mlp",
                 "jobs": [{"job_id": "a", "input": {"x": 1}, "deadline_ms": 5},
                          {"job_id": "b", "input": {"x": 2}}]}
    json.dumps(p)  # JSON only on every queue


def test_dlq_copy_is_a_replayable_job_message():
    row = {"job_id": "j", "model": "digits-mlp", "input": {"pixels": [0]}, "tenant": "t"}
    assert json.loads(dlq_value(row)) == {"v": 1, "job_id": "j", "model": "digits-mlp",
                                          "input": {"pixels": [0]}, "tenant": "t"}


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
    assert dead_letter(dlq, rows) == 1
    (_, reason, detail, kw), = dlq.sent
    assert (reason, detail) == ("WORKER_CRASHED", "boom")
    assert kw == {"topic": "t", "partition": 1, "offset": 7, "job_id": "j"}


def test_a_failing_dlq_never_fails_the_job():
    rows = [{"job_id": "j", "model": "m", "input": {}, "reason": "R", "error": "e"}]
    assert dead_letter(_DLQ(ok=False), rows) == 0
    assert dead_letter(None, rows) == 0
