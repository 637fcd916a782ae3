"""The reply outbox on live PostgreSQL and Kafka: written by the terminal transaction (and only
then), relayed after commit, unpublishable topics delayed without holding up the rest."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from ops.relay import Relay
from producers.replies import reply_event
from producers.topics import delete_topics, ensure_reply_topic
from storage.batches import claim_batch
from storage.ledger import finish_jobs, insert_jobs, queue_jobs
from storage.queries import job_report
from tests.support import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _outbox(db, ids):
    with db.connect() as conn:
        return conn.execute(text(
            "SELECT job_id::text, topic, sent_at, attempts, error, next_at > now() AS later "
            "FROM replies WHERE job_id = ANY(CAST(:ids AS uuid[])) ORDER BY id"),
            {"ids": list(ids)}).all()


@pytest.fixture
def cleanup(owner_db):
    """Job ids whose ledger and outbox rows are deleted afterwards (the worker role cannot)."""
    ids: list[str] = []
    yield ids
    with owner_db.begin() as conn:
        conn.execute(text("DELETE FROM replies WHERE job_id = ANY(CAST(:i AS uuid[]))"), {"i": ids})
        conn.execute(text("DELETE FROM results WHERE job_id = ANY(CAST(:i AS uuid[]))"), {"i": ids})
        conn.execute(text("DELETE FROM jobs WHERE job_id = ANY(CAST(:i AS uuid[]))"), {"i": ids})


def _queued(jid, reply_to):
    return {"job_id": jid, "model": "digits-mlp", "input": {"pixels": [0] * 64},
            "reply_to": reply_to, "source_topic": "t", "source_partition": 0,
            "source_offset": 0}


def test_outbox_row_is_written_once_by_the_transaction_that_makes_a_job_terminal(
        worker_db, cleanup):
    # Given a job with a reply topic and one without, queued then claimed,
    asks, silent, rolled = (str(uuid.uuid4()) for _ in range(3))
    cleanup += [asks, silent, rolled]
    now = datetime.now(UTC)
    with worker_db.begin() as conn:
        queue_jobs(conn, [_queued(asks, "agentq.replies.x"), _queued(silent, None),
                          _queued(rolled, "agentq.replies.x")])
        claims = claim_batch(conn, f"b-{uuid.uuid4()}", "digits-mlp", [asks, silent, rolled], now)
    hold = claims[asks].hold
    # then nothing is in the outbox while they are live;
    assert _outbox(worker_db, cleanup) == []
    # when a transaction that would finish one is rolled back, it leaves nothing either,
    with pytest.raises(RuntimeError), worker_db.begin() as conn:
        finish_jobs(conn, [{"job_id": rolled, "model": "digits-mlp", "label": 1,
                            "lease": claims[rolled].lease}], now, hold)
        raise RuntimeError("rollback")
    assert _outbox(worker_db, cleanup) == []
    # when both finish, twice (a duplicate delivery),
    for _ in range(2):
        with worker_db.begin() as conn:
            finish_jobs(conn, [{"job_id": j, "model": "digits-mlp", "label": 1, "probs": [1.0],
                                "lease": claims[j].lease} for j in (asks, silent)], now, hold)
    # then only the job that asked has one row, for its topic, not yet sent.
    rows = _outbox(worker_db, cleanup)
    assert [(r.job_id, r.topic, r.sent_at) for r in rows] == [(asks, "agentq.replies.x", None)]


def test_bridge_style_terminal_inserts_get_outbox_rows(worker_db, cleanup):
    rejected, expired, plain = (str(uuid.uuid4()) for _ in range(3))
    cleanup += [rejected, expired, plain]
    with worker_db.begin() as conn:
        insert_jobs(conn, [
            {"job_id": rejected, "model": "?", "status": "rejected", "reason": "SCHEMA",
             "reply_to": "agentq.test.never-relayed"},
            {"job_id": expired, "model": "digits-mlp", "status": "expired", "reason": "EXPIRED",
             "reply_to": "agentq.test.never-relayed"},
            {"job_id": plain, "model": "?", "status": "rejected", "reason": "SCHEMA"}])
    assert sorted(r.job_id for r in _outbox(worker_db, cleanup)) == sorted([rejected, expired])


def test_relay_publishes_committed_replies_and_delays_a_topic_it_cannot_write(
        services, worker_db, owner_db, cleanup):
    # Given terminal jobs for a real topic and one whose reply_to Kafka refuses (put there by
    # the owner role: the contract would have refused it at the edge),
    s = replace(services, replies=replace(services.replies, relay_batch=100_000))
    topic = f"agentq.test.outbox-{uuid.uuid4().hex[:8]}"
    ensure_reply_topic(s.kafka, topic)
    good = [str(uuid.uuid4()) for _ in range(5)]
    bad = str(uuid.uuid4())
    cleanup += good + [bad]
    now = datetime.now(UTC)
    with worker_db.begin() as conn:
        queue_jobs(conn, [_queued(j, topic) for j in good])
        claims = claim_batch(conn, f"b-{uuid.uuid4()}", "digits-mlp", good, now)
        finish_jobs(conn, [{"job_id": j, "model": "digits-mlp", "label": 7, "probs": [0.5],
                            "lease": claims[j].lease} for j in good], now, claims[good[0]].hold)
    with owner_db.begin() as conn:
        insert_jobs(conn, [{"job_id": bad, "model": "?", "status": "rejected",
                            "reason": "SCHEMA", "reply_to": "not a topic!"}])
    relay = Relay(s, worker_db)
    try:
        # when the relay makes one pass,
        st = relay.relay_once()
        relay.relay_once()  # and another: sent rows are not sent again
        copies = _read_all(s, topic)
    finally:
        relay.close()
        delete_topics(s.kafka, [topic])
    # then the good replies are on their topic keyed by job_id, equal to the ledger's event,
    assert st.sent >= 5 and st.delayed >= 1
    assert sorted(copies) == sorted(good) and all(len(c) == 1 for c in copies.values())
    events = {jid: c[0] for jid, c in copies.items()}
    with worker_db.connect() as conn:
        for jid in good:
            assert events[jid] == json.loads(json.dumps(reply_event(job_report(conn, jid))))
            assert events[jid]["result"] == {"label": 7, "probs": [0.5]}
    rows = {r.job_id: r for r in _outbox(worker_db, cleanup)}
    assert all(rows[j].sent_at is not None for j in good)
    # and the bad one is delayed with its error, not retried by the second pass.
    assert (rows[bad].sent_at, rows[bad].attempts, rows[bad].later) == (None, 1, True)
    assert "illegal" in rows[bad].error
    assert all(rows[j].attempts == 0 for j in good)


def _read_all(settings, topic):
    got: dict[str, list] = {}
    for key, value in read_topic(settings, topic):
        got.setdefault(key, []).append(value)
    return got


def test_an_idle_relay_wakes_on_the_commit_of_a_terminal_job(services, worker_db, cleanup):
    # Given an idle relay listening for NOTIFY with a long poll interval,
    relay = Relay(services, worker_db)
    jid = str(uuid.uuid4())
    cleanup.append(jid)
    try:
        relay._listen()
        woke: list[float] = []
        t = threading.Thread(target=lambda: (relay.wait(10.0), woke.append(time.monotonic())))
        t.start()
        time.sleep(0.2)
        # when a job becomes terminal with a reply topic and its transaction commits,
        committed = time.monotonic()
        with worker_db.begin() as conn:
            insert_jobs(conn, [{"job_id": jid, "model": "?", "status": "rejected",
                                "reason": "SCHEMA", "reply_to": "agentq.test.never-relayed"}])
        t.join(15)
    finally:
        relay.close()
    # then it wakes at once, not after its poll interval.
    assert woke and woke[0] - committed < 1.0
