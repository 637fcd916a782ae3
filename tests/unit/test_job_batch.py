"""JobBatch: the one shape a batch has on every queue, built by the bridge, rebuilt from the
ledger by retries and the reaper."""

import json
from datetime import UTC, datetime

import pytest

from producers.contract import JobMessage
from workers.batch import JobBatch


def _batch(n: int = 3) -> JobBatch:
    b = JobBatch.new("digits-mlp", "b-1")
    for i in range(n):
        job = JobMessage.new("digits-mlp", {"pixels": [float(i)] * 64}, tenant=f"t{i}",
                             priority=i, deadline_ms=None if i else 1_900_000_000_000,
                             meta={"i": i})
        b.add(job, topic="jobs", partition=i % 2, offset=100 + i, produced_ms=1e12,
              received_ms=1e12 + 5)
    return b


def test_payload_is_json_columns_and_round_trips():
    b = _batch()
    payload = json.loads(json.dumps(b.to_payload()))  # JSON only on every queue
    assert set(payload) == {"v", "batch_id", "model", "job_ids", "inputs", "deadlines_ms",
                            "produced_ms"}  # produce times: for the latency metrics only
    back = JobBatch.from_payload({**payload, "sent_ms": 1e12 + 7})
    assert back == b and back.ledger == []  # ledger columns never travel to the worker
    assert back.produced_ms == [1e12] * 3 and back.sent_ms == 1e12 + 7
    assert back.take([2]).produced_ms == [1e12] and back.take([2]).sent_ms == 1e12 + 7


def test_ledger_rows_carry_every_v1_field_and_the_record_coordinates():
    rows = _batch().ledger_rows("cpu", 1e12 + 9)
    assert [r["source_offset"] for r in rows] == [100, 101, 102]
    assert rows[1]["tenant"] == "t1" and rows[1]["priority"] == 1 and rows[1]["meta"] == {"i": 1}
    assert rows[0]["deadline_at"] == datetime.fromtimestamp(1_900_000_000, UTC)
    assert all(r["queue"] == "cpu" and r["batch_id"] == "b-1" for r in rows)


def test_sub_batches_keep_columns_aligned():
    b = _batch(4)
    sub = b.only([b.job_ids[3], b.job_ids[1]], "b-1~r2")
    assert sub.job_ids == [b.job_ids[1], b.job_ids[3]] and sub.batch_id == "b-1~r2"
    assert sub.inputs == [b.inputs[1], b.inputs[3]] and sub.ledger == [b.ledger[1], b.ledger[3]]


def test_rebuilt_from_ledger_rows_with_deadlines_in_epoch_ms():
    deadline = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    rows = [{"job_id": "a", "input": {"x": 1}, "deadline_at": deadline},
            {"job_id": "b", "input": {"x": 2}, "deadline_at": None}]
    b = JobBatch.from_ledger_rows("m", rows, "reap-1")
    assert b.deadlines_ms == [int(deadline.timestamp() * 1000), None]
    assert JobBatch.from_payload(b.to_payload()) == b


def test_reads_the_row_wise_payload_of_earlier_releases():
    old = {"batch_id": "x", "model": "m", "jobs": [{"job_id": "a", "input": {}, "deadline_ms": 5},
                                                   {"job_id": "b", "input": {}}]}
    b = JobBatch.from_payload(old)
    assert b.job_ids == ["a", "b"] and b.deadlines_ms == [5, None]


def test_misaligned_columns_are_refused():
    with pytest.raises(ValueError):
        JobBatch.from_payload({"batch_id": "x", "model": "m", "job_ids": ["a"], "inputs": [],
                               "deadlines_ms": [None]})
