"""Rebalances that finish: commit on revoke works on the pinned kafka-python (its listener runs
on the client's IO thread, which must never block), the committed offset after a graceful stop
or a rebalance is the last durable record, and a bridge started on a just-created topic owns its
partitions within seconds."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from ops.lag import LagReader
from producers.topics import delete_topics, ensure_topics
from tests.faults.harness import digits_jobs, produce
from tests.support import isolated_settings, wait_for, wait_terminal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _end_offsets(s) -> dict[int, int]:
    c = KafkaConsumer(group_id=None, **s.kafka.client_options())
    try:
        parts = [TopicPartition(s.kafka.jobs_topic, p)
                 for p in sorted(c.partitions_for_topic(s.kafka.jobs_topic) or [])]
        return {tp.partition: off for tp, off in c.end_offsets(parts).items()}
    finally:
        c.close()


def _committed(s) -> dict[int, int]:
    reader = LagReader(s.kafka)
    try:
        return reader.committed()
    finally:
        reader.close()


def _events(proc, name: str) -> list[dict]:
    out = []
    for line in proc.log().splitlines():
        if f'"{name}"' in line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def test_graceful_stop_commits_exactly_the_last_durable_record(stack, worker_db):
    # Given a bridge and a worker that have made 300 jobs durable,
    s = stack.settings
    stack.worker(concurrency=1)
    bridge = stack.bridge()
    jobs = digits_jobs(300)
    produce(s, jobs)
    wait_terminal(worker_db, [j.job_id for j in jobs], 120)
    # when the bridge stops gracefully (SIGTERM),
    assert bridge.stop() == 0
    # then the group's committed offset of every partition is the end of the log: every record
    # is durable, none is committed past, and no commit failed on the way out.
    assert _committed(s) == _end_offsets(s)
    assert "commit_failed" not in bridge.log() and "commit_on_revoke_failed" not in bridge.log()


def test_a_rebalance_commits_on_revoke_and_runs_no_job_twice(stack, worker_db):
    # Given bridge A owning every partition, which never commits on its own timer, with 400
    # jobs made durable (so only the commit on revoke can save them from redelivery),
    s = stack.settings
    stack.worker(concurrency=2)
    a = stack.bridge(extra_env={"AGENTQ_BRIDGE_COMMIT_INTERVAL_MS": "600000"})
    first = digits_jobs(400)
    produce(s, first)
    wait_terminal(worker_db, [j.job_id for j in first], 120)
    ends = _end_offsets(s)
    before = _committed(s)  # at most the start of each partition (a first commit at position 0)
    assert all(before.get(p, 0) < end for p, end in ends.items() if end), (before, ends)
    # when bridge B joins the group (A's partitions are revoked, then shared),
    b = stack.bridge()
    wait_for(lambda: _events(a, "offsets_committed_on_revoke"), 60,
             what="A to commit on revoke")
    # then A committed exactly the end of the log before letting go,
    assert _committed(s) == _end_offsets(s)
    wait_for(lambda: _events(b, "partitions_assigned") and
             any(e["partitions"] for e in _events(b, "partitions_assigned")), 60,
             what="B to own partitions")
    # and when 400 more jobs come,
    second = digits_jobs(400)
    produce(s, second)
    ids = [j.job_id for j in first + second]
    wait_terminal(worker_db, ids, 120)
    # no commit failed or blocked the IO thread,
    for p in (a, b):
        assert "Cannot block on net.run()" not in p.log(), p.log()[-2000:]
        assert "commit_on_revoke_failed" not in p.log()
    # every job ran exactly once (one attempt),
    from sqlalchemy import text
    with worker_db.connect() as conn:
        attempts = conn.execute(text(
            "SELECT attempts, count(*) FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[])) "
            "GROUP BY 1"), {"ids": ids}).all()
    assert dict(attempts) == {1: len(ids)}, attempts
    # and once both stop, the committed offsets are the end of the log.
    assert a.stop() == 0 and b.stop() == 0
    assert _committed(s) == _end_offsets(s)


@pytest.mark.parametrize("attempt", range(3))
def test_a_bridge_on_a_just_created_topic_owns_every_partition_within_seconds(
        built_models, tmp_path, attempt):
    # Given a topic created a moment ago (4 partitions),
    from tests.support import Stack

    s, env = isolated_settings(built_models, f"fresh{attempt}")
    ensure_topics(s.kafka)
    st = Stack(env=env, log_dir=tmp_path)
    try:
        # when a bridge starts on it,
        t0 = time.monotonic()
        bridge = st.bridge()
        # then within 20 s it owns all of them (no stall after "No partition metadata").
        def owned() -> set[int]:
            got: set[int] = set()
            for e in _events(bridge, "partitions_assigned"):
                got |= set(e["partitions"])
            return got if got == set(range(s.kafka.jobs_partitions)) else set()

        wait_for(owned, 20, what="every partition assigned")
        assert time.monotonic() - t0 < 20
    finally:
        st.stop_all()
        delete_topics(s.kafka, [s.kafka.jobs_topic, s.kafka.dlq_topic])


def test_a_rejoin_the_client_starts_itself_is_completed_by_a_bridge_polling_with_short_timeouts(
        built_models, worker_db):
    # Given a bridge whose polls are 1 ms long (as when a batch deadline is due) and three topics
    # created just before it subscribes, so its first assignment is empty and the client rejoins
    # on its own once the partitions appear in its metadata,
    from dataclasses import replace

    from bridge.consumer import Bridge
    from workers.app import make_celery

    for attempt in range(3):
        s, _ = isolated_settings(built_models, f"shortpoll{attempt}")
        s = replace(s, bridge=replace(s.bridge, poll_timeout_ms=1))
        ensure_topics(s.kafka)
        bridge = Bridge(s, worker_db, make_celery(s))
        try:
            # when it steps,
            end = time.monotonic() + 20
            while len(bridge.consumer.assignment()) < s.kafka.jobs_partitions:
                assert time.monotonic() < end, f"attempt {attempt}: {bridge.consumer.assignment()}"
                bridge.step()
            # then that rejoin's assignment is applied: it owns every partition.
            assert {tp.partition for tp in bridge.consumer.assignment()} == set(
                range(s.kafka.jobs_partitions))
        finally:
            bridge.shutdown()
            delete_topics(s.kafka, [s.kafka.jobs_topic, s.kafka.dlq_topic])
