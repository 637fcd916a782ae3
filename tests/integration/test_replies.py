"""Results back to the agent on live services: JobClient (threads, asyncio), replies for
rejected and expired jobs, no reply without a reply topic, invalid reply topics refused."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import text

from producers.client import JobClient
from producers.contract import JobMessage
from producers.producer import JobProducer
from producers.topics import delete_topics
from tests.faults.harness import digits_jobs, dlq_reasons
from tests.support import wait_for, wait_terminal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _ledger(db, ids):
    with db.connect() as conn:
        rows = conn.execute(text(
            "SELECT j.job_id::text, j.status::text, j.reason, j.attempts, r.label, r.probs "
            "FROM jobs j LEFT JOIN results r USING (job_id) "
            "WHERE j.job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": list(ids)})
        return {r[0]: r for r in rows}


def _outbox(db, ids):
    with db.connect() as conn:
        rows = conn.execute(text("SELECT job_id::text, topic, sent_at FROM replies "
                                 "WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": list(ids)})
        return {r[0]: r for r in rows}


def _assert_matches_ledger(results, db):
    ledger = _ledger(db, [r.job_id for r in results])
    assert len(ledger) == len(results)
    for res in results:
        row = ledger[res.job_id]
        assert (res.status, res.reason, res.attempts) == (row.status, row.reason, row.attempts)
        assert res.label == row.label
        assert res.probs == pytest.approx(row.probs, abs=1e-6)


def test_thousand_jobs_from_four_threads_all_get_replies_matching_the_ledger(stack, worker_db):
    # Given a bridge (with its relay), two workers and one client shared by four threads,
    s = stack.settings
    stack.worker(concurrency=2)
    stack.bridge()
    jobs = digits_jobs(1000)
    results: list = []
    errors: list = []
    with JobClient(s, db_url=s.worker_database_url) as client:
        # when each thread submits 250 jobs and waits for its own results,
        def agent(part):
            try:
                handles = client.submit_many(part)
                results.extend(client.wait(handles, timeout=150))
            except Exception as e:  # surfaced by the assertion below
                errors.append(e)

        threads = [threading.Thread(target=agent, args=(jobs[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(200)
        assert client.outstanding() == 0
    # then every job has its reply, once, succeeded, equal to what the ledger holds.
    assert not errors, (errors[:1], stack.logs())
    assert sorted(r.job_id for r in results) == sorted(j.job_id for j in jobs)
    assert {r.status for r in results} == {"succeeded"}
    _assert_matches_ledger(results, worker_db)


def test_asyncio_thousand_concurrent_awaits_on_one_loop(stack, worker_db):
    # Given a bridge and a worker,
    s = stack.settings
    stack.worker(concurrency=2)
    stack.bridge()
    jobs = digits_jobs(1000)

    async def agent():
        async with JobClient(s) as client:
            # when 1,000 submit-and-await coroutines run at once on one event loop,
            got = await asyncio.gather(*(client.submit_async(j, timeout=150) for j in jobs))
            # and a second wave is read with `async for` as results arrive,
            more = digits_jobs(50)
            handles = [await client.submit_handle_async(j) for j in more]
            client.flush()
            streamed = [r async for r in client.as_completed_async(handles, timeout=60)]
            return got, streamed, more

    got, streamed, more = asyncio.run(agent())
    # then every await got its own job's result.
    assert [r.job_id for r in got] == [j.job_id for j in jobs]
    assert {r.status for r in got} == {"succeeded"}
    assert sorted(r.job_id for r in streamed) == sorted(j.job_id for j in more)
    _assert_matches_ledger(got[:200] + streamed, worker_db)


def test_rejected_and_expired_jobs_reply_with_their_reason_and_jobs_without_reply_to_do_not(
        stack, worker_db):
    # Given a bridge (no default results topic), a worker and a client on its own topic,
    s = stack.settings
    stack.worker(concurrency=1)
    stack.bridge()
    with JobClient(s, db_url=s.worker_database_url) as client:
        topic = client.reply_topic
        past = int(time.time() * 1000) - 60_000
        bad_schema = {"v": 1, "job_id": str(uuid.uuid4()), "model": "digits-mlp",
                      "input": {"pixels": [1.0] * 64}, "priority": "high", "reply_to": topic}
        unknown = {"v": 1, "job_id": str(uuid.uuid4()), "model": "no-such-model",
                   "input": {}, "reply_to": topic}
        late = {"v": 1, "job_id": str(uuid.uuid4()), "model": "digits-mlp",
                "input": {"pixels": [1.0] * 64}, "deadline_ms": past, "reply_to": topic}
        silent = digits_jobs(5)  # no reply_to
        # when jobs the bridge refuses (sent by any Kafka client) carry the client's topic,
        handles = {m["job_id"]: client.handle_for(m["job_id"]) for m in (bad_schema, unknown,
                                                                       late)}
        with JobProducer(s.kafka, s.limits) as producer:
            for m in (bad_schema, unknown, late):
                producer.send_raw(json.dumps(m).encode(), key=m["job_id"].encode())
            for j in silent:
                producer.send(j)
            producer.flush(30)
        got = {jid: h.result(60) for jid, h in handles.items()}
    # then each gets a reply with its status and reason,
    assert (got[bad_schema["job_id"]].status, got[bad_schema["job_id"]].reason) == (
        "rejected", "SCHEMA")
    assert (got[unknown["job_id"]].status, got[unknown["job_id"]].reason) == (
        "rejected", "UNKNOWN_MODEL")
    assert (got[late["job_id"]].status, got[late["job_id"]].reason) == ("expired", "EXPIRED")
    assert all(r.result is None for r in got.values())
    # and the jobs without reply_to succeed without any outbox row.
    statuses = wait_terminal(worker_db, [j.job_id for j in silent], timeout_s=60)
    assert set(statuses.values()) == {"succeeded"}
    assert _outbox(worker_db, [j.job_id for j in silent]) == {}
    assert len(_outbox(worker_db, list(handles))) == 3


def test_default_results_topic_and_invalid_reply_to_rejected_at_the_edge(stack, worker_db):
    # Given a bridge with a default results topic, and a client listening on that topic,
    s = stack.settings
    default = f"{s.kafka.jobs_topic}.results"
    stack.env["AGENTQ_KAFKA_RESULTS_TOPIC"] = default
    stack.worker(concurrency=1)
    stack.bridge()
    s = replace(s, kafka=replace(s.kafka, results_topic=default))
    plain = digits_jobs(3)
    invalid = [{"v": 1, "job_id": str(uuid.uuid4()), "model": "digits-mlp",
                "input": {"pixels": [1.0] * 64}, "reply_to": bad}
               for bad in ("has space", "..", "x" * 250, "ümlaut", 7)]
    try:
        with JobClient(s, reply_topic=default) as client:
            handles = [client.handle_for(j.job_id) for j in plain]
            handles += [client.handle_for(m["job_id"]) for m in invalid]
            # when plain jobs (no reply_to) and jobs with invalid reply_to are sent,
            with JobProducer(s.kafka, s.limits) as producer:
                for j in plain:
                    producer.send(j)
                for m in invalid:
                    producer.send_raw(json.dumps(m).encode())
                producer.flush(30)
            got = client.wait(handles, timeout=60)
    finally:
        delete_topics(s.kafka, [default])
    # then the plain jobs reply on the default topic, and each invalid reply_to is rejected
    # with INVALID_REPLY_TO: a ledger row, a DLQ copy, and a reply on the default topic.
    assert [r.status for r in got[:3]] == ["succeeded"] * 3
    assert {(r.status, r.reason) for r in got[3:]} == {("rejected", "INVALID_REPLY_TO")}
    ledger = _ledger(worker_db, [m["job_id"] for m in invalid])
    assert {(r.status, r.reason) for r in ledger.values()} == {("rejected", "INVALID_REPLY_TO")}
    assert dlq_reasons(s, len(invalid))["INVALID_REPLY_TO"] == len(invalid)
    assert {r.topic for r in _outbox(worker_db, [r.job_id for r in got]).values()} == {default}


def test_producer_refuses_an_invalid_reply_to_before_sending(stack):
    from producers.errors import InvalidJob

    s = stack.settings
    with JobProducer(s.kafka, replace(s.limits, reply_topic_prefixes="agentq.replies.")) as p:
        with pytest.raises(InvalidJob, match="INVALID_REPLY_TO"):
            p.send(JobMessage.new("digits-mlp", {"pixels": [0] * 64}, reply_to="other.topic"))


def _relay_children(bridge_pid: int) -> list[int]:
    from pathlib import Path

    pids = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"relay" in part for part in cmd) and b"--parent-pid" in cmd and \
                cmd[cmd.index(b"--parent-pid") + 1] == str(bridge_pid).encode():
            pids.append(int(d.name))
    return pids


def test_the_bridges_relay_child_is_restarted_and_dies_with_its_bridge(stack, worker_db):
    # Given a bridge with its relay in a child process (the default) and a worker,
    import os
    import signal

    s = stack.settings
    stack.worker()
    bridge = stack.bridge()
    first = wait_for(lambda: _relay_children(bridge.popen.pid), 60, what="the relay child")
    # when the relay child is killed, the bridge starts another and replies still arrive;
    os.kill(first[0], signal.SIGKILL)
    second = wait_for(lambda: [p for p in _relay_children(bridge.popen.pid) if p != first[0]],
                      60, what="a restarted relay child")
    with JobClient(s, db_url=s.worker_database_url) as client:
        results = client.wait(client.submit_many(digits_jobs(20)), timeout=120)
    assert {r.status for r in results} == {"succeeded"}, stack.logs()
    # and when the bridge itself is killed with SIGKILL (not its group), its relay exits too.
    os.kill(bridge.popen.pid, signal.SIGKILL)
    bridge.popen.wait(10)
    wait_for(lambda: not any(_is_relay(p) for p in second), 30, what="the orphaned relay to exit")


def _is_relay(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"relay" in f.read()  # a zombie's cmdline is empty
    except OSError:
        return False
