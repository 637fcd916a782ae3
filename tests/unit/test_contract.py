"""The v1 wire contract: limits before parsing, schema, model inputs, deadlines."""

import json
import uuid

import pytest

from agentq.config import Limits
from producers.contract import (
    JobMessage,
    Rejection,
    RejectReason,
    json_depth_exceeds,
    parse_record,
)

LIMITS = Limits(max_record_bytes=2048, max_json_depth=6, max_text_chars=100)


def msg(**over):
    base = {"v": 1, "job_id": str(uuid.uuid4()), "model": "minilm-l6", "input": {"text": "hi"}}
    base.update(over)
    return json.dumps(base).encode()


def reason(value, **kw):
    res = parse_record(value, LIMITS, **kw)
    assert isinstance(res, Rejection), res
    return res.reason


def test_valid_text_job_parses_with_canonical_uuid():
    jid = str(uuid.uuid4()).upper()
    job = parse_record(msg(job_id=jid, tenant="t1", priority=3), LIMITS)
    assert isinstance(job, JobMessage)
    assert job.job_id == jid.lower() and job.tenant == "t1" and job.priority == 3


def test_valid_digits_job_parses():
    job = parse_record(msg(model="digits-mlp", input={"pixels": [0] * 64}), LIMITS)
    assert isinstance(job, JobMessage) and job.model == "digits-mlp"


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"x" * 3000, RejectReason.PAYLOAD_TOO_LARGE),
        (b"\xff\xfe{not utf8", RejectReason.NOT_UTF8),
        (b'{"v": 1, "job_id": ', RejectReason.MALFORMED_JSON),
        (b"[" * 50 + b"]" * 50, RejectReason.TOO_DEEP),
        (b"[1, 2]", RejectReason.SCHEMA),
        (None, RejectReason.MALFORMED_JSON),
    ],
)
def test_limits_and_syntax_are_checked_before_schema(value, expected):
    assert reason(value) == expected


def test_missing_job_id_is_a_schema_error():
    body = {"v": 1, "model": "minilm-l6", "input": {"text": "hi"}}
    assert reason(json.dumps(body).encode()) == RejectReason.SCHEMA


def test_unknown_model_is_rejected_and_keeps_the_job_id():
    jid = str(uuid.uuid4())
    res = parse_record(msg(job_id=jid, model="gpt-17"), LIMITS)
    assert isinstance(res, Rejection) and res.reason == RejectReason.UNKNOWN_MODEL
    assert res.job_id == jid


def test_model_not_registered_is_unknown():
    assert reason(msg(), known_models={"digits-mlp"}) == RejectReason.UNKNOWN_MODEL


def test_text_over_the_limit_is_payload_too_large():
    assert reason(msg(input={"text": "a" * 101})) == RejectReason.PAYLOAD_TOO_LARGE


@pytest.mark.parametrize("pixels", [[0] * 63, [0] * 63 + ["x"], [0] * 63 + [True], "abc"])
def test_bad_pixels_are_schema_errors(pixels):
    assert reason(msg(model="digits-mlp", input={"pixels": pixels})) == RejectReason.SCHEMA


def test_expired_deadline_is_rejected_at_receipt():
    assert reason(msg(deadline_ms=1000), now_ms=2000) == RejectReason.EXPIRED


def test_wrong_version_is_schema_error():
    assert reason(msg(v=2)) == RejectReason.SCHEMA


def test_depth_scanner_ignores_brackets_inside_strings():
    assert not json_depth_exceeds('{"a": "[[[[[[[[[[[[[["}', 3)
    assert json_depth_exceeds('{"a": [[[[1]]]]}', 3)


def test_encode_roundtrip():
    job = JobMessage.new("digits-mlp", {"pixels": [1.0] * 64}, tenant="x", deadline_ms=5)
    again = parse_record(job.encode(), LIMITS)
    assert again == job


@pytest.mark.parametrize("bad", [10**400, None, True, 1e39, -3.5e38])
def test_huge_or_non_numeric_pixels_are_schema_errors(bad):
    pixels = [1.5] * 63 + [bad]
    assert reason(msg(model="digits-mlp", input={"pixels": pixels})) == RejectReason.SCHEMA


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_literals_are_not_json(bad):
    # json.dumps writes NaN / Infinity, which RFC 8259 JSON does not have
    pixels = [1.5] * 63 + [bad]
    assert reason(msg(model="digits-mlp", input={"pixels": pixels})) == RejectReason.MALFORMED_JSON


def test_pixels_that_overflow_float32_are_refused_but_its_range_is_accepted():
    assert reason(msg(model="digits-mlp", input={"pixels": [1e308] * 64})) == RejectReason.SCHEMA
    job = parse_record(msg(model="digits-mlp", input={"pixels": [3.0e38] * 64}), LIMITS)
    assert isinstance(job, JobMessage)


def test_job_ids_in_any_uuid_form_are_kept_canonical_and_others_refused():
    # the canonical form is kept without parsing; every other form uuid.UUID reads is
    # normalised to it; look-alikes are refused
    canonical = str(uuid.uuid4())

    def parsed(job_id):
        return parse_record(json.dumps({"v": 1, "job_id": job_id, "model": "digits-mlp",
                                        "input": {"pixels": [0] * 64}}).encode(), Limits())

    for form in [canonical, canonical.upper(), "{" + canonical + "}", "urn:uuid:" + canonical,
                 canonical.replace("-", "")]:
        job = parsed(form)
        assert isinstance(job, JobMessage) and job.job_id == canonical, form
    for bad in [canonical[:-1] + "g", canonical + "0", canonical.replace("-", "_"),
                canonical + "\n", ""]:
        got = parsed(bad)
        assert isinstance(got, Rejection) and got.reason == RejectReason.SCHEMA, bad
