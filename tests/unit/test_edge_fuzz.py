"""The edge, fuzzed without services: whatever bytes arrive, ``parse_record`` returns a job or
a rejection with a reason (never raises), and what it accepts is storable: no NUL, no unpaired
surrogate, no non-finite number, integers in their columns' ranges, encodable as strict JSON."""

import json
import math

import pytest

from agentq.config import Limits
from producers.contract import (
    DEADLINE_MAX_MS,
    INT32_MAX,
    INT32_MIN,
    JobMessage,
    Rejection,
    RejectReason,
    parse_record,
)
from producers.jsonsafe import problem
from tests.faults.fuzz import cases

pytestmark = pytest.mark.timeout(120)
PIXELS = [[float(i % 17)] * 64 for i in range(20)]


def _storable(job: JobMessage) -> None:
    assert problem(job.input, "input") is None and problem(job.meta, "meta") is None
    assert INT32_MIN <= job.priority <= INT32_MAX
    assert job.deadline_ms is None or 0 <= job.deadline_ms <= DEADLINE_MAX_MS
    json.loads(job.encode())  # strict JSON: allow_nan=False would have raised
    if job.model == "digits-mlp":
        assert all(math.isfinite(p) and abs(p) <= 3.4028234663852886e38
                   for p in job.input["pixels"])


@pytest.mark.parametrize("seed", range(4))
def test_every_mutated_record_is_a_job_or_a_rejection_with_a_reason(seed):
    accepted = rejected = 0
    for value, _ts, good in cases(3000, seed, PIXELS, models=("digits-mlp", "minilm-l6")):
        res = parse_record(value, Limits(), {"digits-mlp", "minilm-l6"}, now_ms=0)
        if isinstance(res, Rejection):
            assert not good, (value[:200], res)
            assert isinstance(res.reason, RejectReason) and res.detail
            rejected += 1
        else:
            _storable(res)
            accepted += 1
    assert rejected > 1500 and accepted > 1000  # both sides of the edge were exercised


@pytest.mark.parametrize("raw, reason", [
    ('"\\u0000"', RejectReason.SCHEMA), ('"\\ud800"', RejectReason.SCHEMA),
    ("NaN", RejectReason.MALFORMED_JSON), ("1e999", RejectReason.SCHEMA),
])
def test_values_postgres_refuses_are_refused_in_meta_tenant_and_text(raw, reason):
    uuid_ = "7f9c2b1e-2d4a-4c7e-9a55-0d2f5f1e9b10"
    for template in ('{"v":1,"job_id":"%s","model":"minilm-l6","input":{"text":"hi"},'
                     '"meta":{"k":%s}}',
                     '{"v":1,"job_id":"%s","model":"minilm-l6","input":{"text":"hi","x":%s}}'):
        res = parse_record((template % (uuid_, raw)).encode(), Limits())
        assert isinstance(res, Rejection) and res.reason == reason, (template, res)
    if raw.startswith('"'):
        for field in ("tenant", "text"):
            body = {"v": 1, "job_id": uuid_, "model": "minilm-l6", "input": {"text": "hi"}}
            text = json.dumps(body)
            text = (text[:-1] + f', "tenant": {raw}}}' if field == "tenant"
                    else text.replace('"hi"', raw))
            res = parse_record(text.encode(), Limits())
            assert isinstance(res, Rejection) and res.reason == RejectReason.SCHEMA, (field, res)


@pytest.mark.parametrize("field, value", [
    ("priority", 2**31), ("priority", True), ("deadline_ms", -1), ("deadline_ms", 2**62),
    ("deadline_ms", 1.5), ("v", True), ("v", 1.0),
])
def test_numbers_outside_their_columns_are_schema_errors(field, value):
    body = {"v": 1, "job_id": "7f9c2b1e-2d4a-4c7e-9a55-0d2f5f1e9b10", "model": "minilm-l6",
            "input": {"text": "hi"}, field: value}
    res = parse_record(json.dumps(body).encode(), Limits())
    assert isinstance(res, Rejection) and res.reason == RejectReason.SCHEMA


def test_record_timestamps_outside_any_plausible_clock_are_not_produce_times():
    from bridge.records import produced_ms, ts

    now = 1_800_000_000_000
    assert produced_ms(now - 5_000, now) == now - 5_000
    for bad in (None, 0, -1, 1, now - 366 * 86_400_000, now + 7_200_000, 1 << 62):
        assert produced_ms(bad, now) is None
    assert ts(1 << 62) is None and ts(-5) is None and ts(now) is not None
