"""reply_to in the contract and its JSON Schema; result events; what a timeout tells."""

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentq.config import Limits, Settings
from producers.client import ledger_says
from producers.contract import JobMessage, Rejection, RejectReason, parse_record, topic_problem
from producers.errors import JobFailed
from producers.replies import JobResult, encode_event, reply_event
from producers.schema import job_schema

REPO = Path(__file__).resolve().parents[2]


def msg(**over):
    base = {"v": 1, "job_id": str(uuid.uuid4()), "model": "digits-mlp",
            "input": {"pixels": [0] * 64}}
    base.update(over)
    return json.dumps(base).encode()


@pytest.mark.parametrize("name", ["agentq.replies.a1", "a", "A-b_c.d", "x" * 249, "...",
                                  "agent-7.results"])
def test_legal_topic_names_are_accepted(name):
    assert topic_problem(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "has space", "a/b", "ümlaut",
                                  "tab\t", 7, None, ["t"]])
def test_illegal_topic_names_are_refused(name):
    assert topic_problem(name) is not None


def test_allow_list_prefixes_come_from_the_limits_setting():
    limits = Settings.from_env({"AGENTQ_LIMIT_REPLY_TOPIC_PREFIXES": "agentq.replies., team-a."}
                               ).limits
    assert limits.reply_prefixes() == ("agentq.replies.", "team-a.")
    assert topic_problem("team-a.x", limits.reply_prefixes()) is None
    assert "start with" in topic_problem("team-b.x", limits.reply_prefixes())
    assert Limits().reply_prefixes() == ()


def test_reply_to_is_parsed_into_the_message_and_encoded_back():
    job = parse_record(msg(reply_to="agentq.replies.me"), Limits())
    assert isinstance(job, JobMessage) and job.reply_to == "agentq.replies.me"
    assert json.loads(job.encode())["reply_to"] == "agentq.replies.me"
    assert "reply_to" not in json.loads(JobMessage.new("digits-mlp", {"pixels": []}).encode())


def test_invalid_reply_to_is_rejected_with_its_own_reason_and_no_reply_topic():
    jid = str(uuid.uuid4())
    res = parse_record(msg(job_id=jid, reply_to="no spaces please"), Limits())
    assert isinstance(res, Rejection)
    assert (res.reason, res.job_id, res.reply_to) == (RejectReason.INVALID_REPLY_TO, jid, None)
    limited = Limits(reply_topic_prefixes="agentq.replies.")
    res = parse_record(msg(reply_to="elsewhere"), limited)
    assert isinstance(res, Rejection) and res.reason == RejectReason.INVALID_REPLY_TO


@pytest.mark.parametrize("over, reason", [
    ({"model": "nope"}, RejectReason.UNKNOWN_MODEL),
    ({"priority": "high"}, RejectReason.SCHEMA),
    ({"input": {"pixels": [0] * 3}}, RejectReason.SCHEMA),
    ({"deadline_ms": 1}, RejectReason.EXPIRED),
])
def test_a_refusal_after_the_reply_to_check_keeps_the_reply_topic(over, reason):
    res = parse_record(msg(reply_to="agentq.replies.me", **over), Limits(), now_ms=10**13)
    assert isinstance(res, Rejection)
    assert (res.reason, res.reply_to) == (reason, "agentq.replies.me")


def test_checked_in_json_schema_is_the_generated_one():
    on_disk = json.loads((REPO / "docs" / "job-v1.schema.json").read_text())
    assert on_disk == job_schema()


def test_json_schema_reply_to_pattern_agrees_with_the_contract():
    prop = job_schema()["properties"]["reply_to"]
    pattern = re.compile(prop["pattern"])
    for name in ["agentq.replies.a1", "has space", "a/b", "x-y_z.0"]:
        legal = bool(pattern.match(name)) and len(name) <= prop["maxLength"]
        assert legal == (topic_problem(name) is None), name
    assert set(prop["not"]["enum"]) == {".", ".."}
    assert "reply_to" in job_schema()["properties"] and "reply_to" not in job_schema()["required"]


def _row(**over):
    t = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    row = {"job_id": str(uuid.uuid4()), "status": "succeeded", "reason": None, "error": None,
           "model": "digits-mlp", "tenant": "t", "meta": {"k": 1}, "attempts": 1,
           "produced_at": t, "received_at": t, "queued_at": t, "started_at": t,
           "finished_at": t + timedelta(milliseconds=5), "label": 3,
           "probs": [0.1, 0.9], "embedding": None, "extra": None}
    row.update(over)
    return row


def test_reply_event_carries_the_result_only_for_succeeded_jobs_and_is_deterministic():
    ok = reply_event(_row())
    assert ok["result"] == {"label": 3, "probs": [0.1, 0.9]}
    assert ok["timestamps_ms"]["finished"] - ok["timestamps_ms"]["produced"] == 5.0
    assert encode_event(reply_event(_row(job_id=ok["job_id"]))) == encode_event(ok)
    failed = reply_event(_row(status="failed", reason="INFERENCE_FAILED", error="boom"))
    assert failed["result"] is None and failed["reason"] == "INFERENCE_FAILED"


def test_job_result_round_trips_the_event_and_raises_for_failures():
    event = reply_event(_row(label=None, probs=None, embedding=[0.5] * 4))
    res = JobResult.decode(encode_event(event))
    assert res.to_event() == event
    assert res.ok and res.embedding == [0.5] * 4 and res.raise_for_status() is res
    bad = JobResult.from_event(reply_event(_row(status="rejected", reason="SCHEMA")))
    with pytest.raises(JobFailed, match="rejected \\(SCHEMA\\)"):
        bad.raise_for_status()


def test_a_timeout_says_what_the_ledger_knows():
    now = datetime.now(UTC)
    text, status = ledger_says(None)
    assert status == "unknown" and "no row" in text
    text, status = ledger_says({"status": "queued", "queued_at": now - timedelta(seconds=3)})
    assert status == "queued" and "queued for 3." in text
    text, status = ledger_says({"status": "running", "attempts": 2,
                                "started_at": now - timedelta(seconds=1)})
    assert status == "running" and "attempt 2" in text
    base = {"status": "succeeded", "reason": None, "reply_to": "t", "reply_sent_at": None,
            "reply_error": None}
    assert "waits in the outbox" in ledger_says(base, "t")[0]
    assert "sent to t at" in ledger_says({**base, "reply_sent_at": now}, "t")[0]
    assert "no reply topic" in ledger_says({**base, "reply_to": None})[0]
    assert "not this client's topic" in ledger_says({**base, "reply_sent_at": now}, "u")[0]


def test_reply_settings_come_from_the_environment():
    s = Settings.from_env({"AGENTQ_KAFKA_RESULTS_TOPIC": "agentq.results",
                           "AGENTQ_REPLY_RELAY": "0", "AGENTQ_REPLY_TOPIC_PARTITIONS": "3",
                           "AGENTQ_REPLY_TOPIC_RETENTION_MS": "60000",
                           "AGENTQ_REPLY_MAX_OUTSTANDING": "20000"})
    assert s.kafka.results_topic == "agentq.results"
    r = s.replies
    assert (r.relay, r.topic_partitions, r.topic_retention_ms, r.max_outstanding) == (
        "off", 3, 60000, 20000)
    d = Settings.from_env({})
    assert d.kafka.results_topic is None and d.replies.relay == "process"
    for raw, mode in (("thread", "thread"), ("1", "process"), ("PROCESS", "process"),
                      ("off", "off")):
        assert Settings.from_env({"AGENTQ_REPLY_RELAY": raw}).replies.relay == mode
    with pytest.raises(ValueError, match="AGENTQ_REPLY_RELAY"):
        Settings.from_env({"AGENTQ_REPLY_RELAY": "sometimes"})
