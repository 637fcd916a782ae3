"""A burst on live services: offered load well above capacity for ~20 s, then idle, with the real
`agentq autoscale` process resizing a real Celery worker through remote control."""

from __future__ import annotations

import time

import pytest

from bench.burst import (
    Produced,
    Sampler,
    _burst_env,
    autoscaler_argv,
    direction_changes,
    produce_at_rate,
    read_trace,
)
from ops.lag import inflight_jobs
from tests.support import rows_for_source, wait_for, wait_terminal

pytestmark = pytest.mark.integration

CAP = 160  # in-flight jobs per bridge
RATE = 250  # jobs/s offered; one worker process does ~60 (8 jobs per 100 ms batch + overhead)
BURST_S = 20


@pytest.mark.timeout(400)
def test_burst_scales_workers_up_then_down_under_the_inflight_cap_and_loses_nothing(
        stack, worker_db, tmp_path):
    # Given a bridge with an in-flight cap, one worker process whose batches each take 100 ms,
    # and the autoscaler allowed 1..3 processes,
    stack.env.update(_burst_env(max_batch=8, cap=CAP, delay_ms=100))
    topic = stack.settings.kafka.jobs_topic
    trace = tmp_path / "autoscale.jsonl"
    stack.worker(concurrency=1, args=("-I", "tests.slow_batches"))
    stack.bridge()
    stack.start("autoscaler", autoscaler_argv(trace, 1, 3, target_drain_s=10,
                                             down_window_s=12, settle_s=4))
    wait_for(lambda: any(r["actual_workers"] == 1 for r in read_trace(trace)), 60,
             what="the autoscaler to see the worker")
    sampler = Sampler(lambda: inflight_jobs(worker_db, topic), 0.2)
    sampler.start()

    # when ~4x one worker's capacity is offered for 20 s, then nothing,
    produced = produce_at_rate(stack.settings, RATE, BURST_S, Produced())
    statuses = wait_terminal(worker_db, produced.job_ids, timeout_s=240)
    ended = time.time()

    def scaled_down():
        rows = read_trace(trace)
        return rows if rows and rows[-1]["wall"] > ended and rows[-1]["actual_workers"] == 1 \
            and rows[-1]["desired_workers"] == 1 else None

    rows = wait_for(scaled_down, 120, interval_s=1, what="the pool to shrink back to 1")
    sampler.halt.set()
    sampler.join(5)

    # then every job is one succeeded ledger row (none lost, none duplicated),
    assert set(statuses.values()) == {"succeeded"}, stack.logs()
    assert len(rows_for_source(worker_db, topic)) == len(produced.job_ids)
    # in-flight never exceeded the cap, though the backlog pressed on it,
    peak = max(v for _, v in sampler.samples)
    assert peak <= CAP, (peak, stack.logs())
    assert peak > CAP // 2, f"the burst never pressed on the cap (peak in-flight {peak})"
    assert max(r["lag"] for r in rows) > CAP, "the backlog should have stayed in Kafka"
    # and the pool grew past one process, came back to one, and turned at most twice.
    assert max(r["actual_workers"] for r in rows) >= 2, rows
    assert direction_changes([r["desired_workers"] for r in rows]) <= 2, rows
    assert direction_changes([r["actual_workers"] for r in rows]) <= 2, rows
    assert all(p.alive() for p in stack.procs), stack.logs()
