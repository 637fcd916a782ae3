"""The batching pipeline on live services: other Kafka clients, expiry, duplicates, bucketing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
from sklearn.datasets import load_digits
from sqlalchemy import text

from bridge.buckets import padding_of
from producers.contract import JobMessage
from producers.producer import JobProducer
from storage.registry import registered_names
from tests.support import require, wait_for, wait_terminal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _rows(engine, ids):
    with engine.connect() as conn:
        return {r.job_id: r for r in conn.execute(text(
            "SELECT j.job_id::text, j.status::text AS status, j.reason, j.tenant, j.meta, "
            "j.priority, j.produced_at, j.started_at, j.batch_id, r.label, r.probs, r.extra, "
            "r.job_id IS NOT NULL AS has_result "
            "FROM jobs j LEFT JOIN results r USING (job_id) "
            "WHERE j.job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": list(ids)})}


def test_kcat_produced_v1_messages_are_processed_like_our_own(stack, worker_db):
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    require(kcat, "kcat is not installed (Debian package kcat)")
    # Given a bridge and a worker, and the same 40 images sent by kcat and by JobProducer,
    s = stack.settings
    stack.worker(concurrency=1)
    stack.bridge()
    pixels = load_digits().data[:40].tolist()
    ours = [JobMessage.new("digits-mlp", {"pixels": p}, tenant="t-ours", priority=2,
                           meta={"via": "x"}) for p in pixels]
    theirs = [JobMessage.new("digits-mlp", {"pixels": p}, tenant="t-ours", priority=2,
                             meta={"via": "x"}) for p in pixels]
    with JobProducer(s.kafka, s.limits) as producer:
        for job in ours:
            producer.send(job)
        producer.flush()
    # when kcat publishes plain v1 JSON lines (key TAB value, no headers, librdkafka defaults),
    lines = "".join(f"{j.job_id}\t{json.dumps(j.to_dict())}\n" for j in theirs)
    subprocess.run([kcat, "-P", "-b", s.kafka.bootstrap_servers, "-t", s.kafka.jobs_topic,
                    "-K", "\t"], input=lines.encode(), check=True, timeout=60)
    # then both succeed with identical results and ledger fields.
    ids = [j.job_id for j in ours + theirs]
    statuses = wait_terminal(worker_db, ids, timeout_s=120)
    assert set(statuses.values()) == {"succeeded"}, stack.logs()
    rows = _rows(worker_db, ids)
    for a, b in zip(ours, theirs, strict=True):
        ra, rb = rows[a.job_id], rows[b.job_id]
        assert (ra.label, ra.tenant, ra.meta, ra.priority) == (rb.label, rb.tenant, rb.meta,
                                                               rb.priority)
        assert ra.probs == pytest.approx(rb.probs, abs=1e-6)
        assert rb.produced_at is not None  # kcat's CreateTime is kept as produced_at
    # and each batch's log line says how long it waited between its publish and its start.
    waits = re.findall(r'"?queue_ms"?[:=] ?([0-9.]+)', stack.logs())
    assert waits and all(float(w) >= 0 for w in waits), stack.logs()[-2000:]


def test_job_that_expires_in_the_queue_is_never_inferred_and_ends_expired(stack, worker_db):
    # Given a bridge with no worker running yet,
    s = stack.settings
    stack.bridge()
    soon = int(time.time() * 1000) + 3000
    jobs = [JobMessage.new("digits-mlp", {"pixels": [1.0] * 64}, deadline_ms=soon)
            for _ in range(20)]
    keep = [JobMessage.new("digits-mlp", {"pixels": [1.0] * 64}) for _ in range(5)]
    with JobProducer(s.kafka, s.limits) as producer:
        for job in jobs + keep:
            producer.send(job)
        producer.flush()
    # when the jobs are queued before their deadline but a worker only starts after it,
    wait_for(lambda: len(_rows(worker_db, [j.job_id for j in jobs + keep])) == 25, 60,
             what="ledger rows")
    time.sleep(max(0.0, soon / 1000 - time.time()) + 0.5)
    stack.worker(concurrency=1)
    # then they end expired with reason EXPIRED, were never started, have no result,
    statuses = wait_terminal(worker_db, [j.job_id for j in jobs + keep], timeout_s=120)
    rows = _rows(worker_db, statuses)
    for j in jobs:
        r = rows[j.job_id]
        assert (r.status, r.reason, r.has_result, r.started_at) == ("expired", "EXPIRED", False,
                                                                    None), stack.logs()
    # and the jobs without a deadline in the same batches succeed.
    assert {rows[j.job_id].status for j in keep} == {"succeeded"}


def test_duplicate_deliveries_of_one_job_id_produce_one_result_row(stack, worker_db):
    # Given one job sent five times (same job_id, five Kafka records) among other jobs,
    s = stack.settings
    stack.worker(concurrency=1)
    stack.bridge()
    dup = JobMessage.new("digits-mlp", {"pixels": [2.0] * 64})
    others = [JobMessage.new("digits-mlp", {"pixels": [3.0] * 64}) for _ in range(30)]
    with JobProducer(s.kafka, s.limits) as producer:
        for i in range(5):
            producer.send(dup, routing_key="same-partition")
            producer.send(others[i])
        for job in others[5:]:
            producer.send(job)
        producer.flush()
    # then it has one ledger row and one result row, and every job succeeded.
    statuses = wait_terminal(worker_db, [dup.job_id] + [o.job_id for o in others], 120)
    assert set(statuses.values()) == {"succeeded"}, stack.logs()
    with worker_db.connect() as conn:
        n_results = conn.execute(text("SELECT count(*) FROM results WHERE job_id = :j"),
                                 {"j": dup.job_id}).scalar_one()
        n_jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE job_id = :j"),
                              {"j": dup.job_id}).scalar_one()
    assert (n_jobs, n_results) == (1, 1)


def test_minilm_batches_carry_less_padding_than_arrival_order(stack, worker_db):
    with worker_db.connect() as conn:
        require("minilm-l6" in registered_names(conn),
                "minilm-l6 is not registered (agentq models build minilm-l6)")
    from bench.workload import mixed_texts

    # Given a backlog of mixed-length texts (5..120 tokens) and a bridge with a long window,
    s = stack.settings
    n = 600
    jobs = [JobMessage.new("minilm-l6", {"text": t}) for t in mixed_texts(n, seed=3)]
    with JobProducer(s.kafka, s.limits) as producer:
        for job in jobs:
            producer.send(job, routing_key="one-partition")
        producer.flush()
    stack.worker(concurrency=1)
    stack.bridge(extra_env={"AGENTQ_BRIDGE_MAX_WAIT_MS": "500"})
    statuses = wait_terminal(worker_db, [j.job_id for j in jobs], timeout_s=200)
    assert set(statuses.values()) == {"succeeded"}, stack.logs()
    # when we count real and padded tokens of the batches the bridge formed (tokens recorded
    # by the worker per result), against the same batch sizes taken in arrival order,
    with worker_db.connect() as conn:
        rows = conn.execute(text(
            "SELECT j.batch_id, j.source_offset, (r.extra ->> 'tokens')::int AS tokens "
            "FROM jobs j JOIN results r USING (job_id) "
            "WHERE j.job_id = ANY(CAST(:ids AS uuid[])) ORDER BY j.source_offset"),
            {"ids": [j.job_id for j in jobs]}).all()
    by_batch: dict[str, list[int]] = {}
    for r in rows:
        by_batch.setdefault(r.batch_id, []).append(r.tokens)
    sizes = [len(v) for v in by_batch.values()]
    arrival = [r.tokens for r in rows]
    fifo_batches, k = [], 0
    for size in sizes:
        fifo_batches.append(arrival[k:k + size])
        k += size
    bucketed, fifo = padding_of(by_batch.values()), padding_of(fifo_batches)
    # then the bridge's batches need fewer padded tokens for the same real tokens.
    assert bucketed.real == fifo.real
    assert bucketed.padded < 0.8 * fifo.padded, (bucketed, fifo, sizes)

