"""JobBatch: the one shape a batch has on every queue, built by the bridge, rebuilt from the
ledger by retries and the reaper."""

import json
from datetime import UTC, datetime

import pytest

from producers.contract import JobMessage
from workers.batch import JobBatch
from workers.packed import PackedInputs


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
    assert set(payload) == {"v", "batch_id", "model", "job_ids", "packed", "deadlines_ms",
                            "produced_ms"}  # produce times: for the latency metrics only
    assert payload["v"] == 2 and payload["packed"]["shape"] == [3, 64]
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


def test_plain_inputs_travel_as_v1_lists():
    b = JobBatch.new("minilm-l6", "b-2")
    b.add(JobMessage.new("minilm-l6", {"text": "hello"}), topic="jobs", partition=0, offset=1,
          produced_ms=None, received_ms=1e12)
    payload = json.loads(json.dumps(b.to_payload()))
    assert payload["v"] == 1 and payload["inputs"] == [{"text": "hello"}]
    assert "packed" not in payload
    assert JobBatch.from_payload(payload) == b


@pytest.mark.parametrize("inputs", [
    [{"pixels": [1.0] * 64}, {"pixels": [1.0] * 63}],  # widths differ
    [{"pixels": [1.0] * 64, "extra": 1}],  # a field the matrix would drop
    [{"pixels": [1.0] * 63 + ["x"]}],
    [{"pixels": [1.0] * 63 + [float("nan")]}],
    [{"pixels": [1e300] * 64}],  # beyond float32: would become inf
])
def test_inputs_a_matrix_cannot_hold_exactly_travel_as_lists(inputs):
    b = JobBatch("b", "digits-mlp", [f"j{i}" for i in range(len(inputs))], inputs,
                 [None] * len(inputs))
    payload = b.to_payload()
    assert "packed" not in payload and payload["inputs"] == inputs


def test_packed_inputs_slice_like_lists_and_refuse_a_bad_wire_form():
    b = _batch(4)
    back = JobBatch.from_payload(json.loads(json.dumps(b.to_payload())))
    sub = back.only([back.job_ids[3], back.job_ids[0]])
    assert isinstance(sub.inputs, PackedInputs) and sub.inputs.matrix.shape == (2, 64)
    assert list(sub.inputs) == [b.inputs[0], b.inputs[3]]  # read as dicts on slow paths
    assert JobBatch.from_payload(sub.to_payload()) == sub
    wire = b.to_payload()
    for bad in ({**wire["packed"], "dtype": "<f8"}, {**wire["packed"], "shape": [5, 64]},
                {**wire["packed"], "b64": wire["packed"]["b64"][:-4]},
                {**wire["packed"], "b64": "!" * len(wire["packed"]["b64"])},
                {**wire["packed"], "shape": [4, 10**6]}):
        with pytest.raises(ValueError):
            JobBatch.from_payload({**wire, "packed": bad})


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


def test_the_digits_handler_feeds_a_packed_matrix_and_fails_only_its_bad_rows():
    import numpy as np

    from models.digits_mlp import DigitsHandler

    m = np.arange(3 * 64, dtype=np.float32).reshape(3, 64)
    m[1, 5] = np.nan  # a wire form may carry what pack() never builds
    prepared = DigitsHandler().prepare(PackedInputs("pixels", m))
    assert prepared.ok == [0, 2] and list(prepared.errors) == [1]
    assert np.array_equal(prepared.feeds["pixels"], m[[0, 2]])
    plain = DigitsHandler().prepare([{"pixels": m[0].tolist()}, {"pixels": m[2].tolist()}])
    assert np.array_equal(plain.feeds["pixels"], prepared.feeds["pixels"])
