"""Safe offsets on real Kafka: a slow batch holds the commit back while later batches finish."""

from __future__ import annotations

import threading
import time

import pytest
from kafka import TopicPartition

from bridge.batcher import MicroBatcher
from bridge.consumer import Bridge
from producers.contract import JobMessage
from producers.producer import JobProducer
from storage.db import make_engine
from workers.app import make_celery

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class HeldPublisher:
    """Publishes nothing; the batch holding ``held_job`` waits for ``gate``."""

    def __init__(self, held_job: str, gate: threading.Event) -> None:
        self.held_job, self.gate = held_job, gate

    def __call__(self, batch, queue) -> None:
        if self.held_job in batch.job_ids:
            assert self.gate.wait(60)


def _step_until(bridge: Bridge, pred, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < end, bridge.stats
        bridge.step()


def test_out_of_order_completion_never_commits_past_an_unfinished_batch(stack):
    # Given 50 jobs on one partition, batched by 10, and the first batch's publish held back,
    s = stack.settings
    jobs = [JobMessage.new("digits-mlp", {"pixels": [1.0] * 64}) for _ in range(50)]
    with JobProducer(s.kafka, s.limits) as producer:
        metas = [producer.send(j, routing_key="one") for j in jobs]
        producer.flush()
    offsets = [m.get(timeout=10) for m in metas]
    tp = TopicPartition(s.kafka.jobs_topic, offsets[0].partition)
    first, last = offsets[0].offset, offsets[-1].offset
    gate = threading.Event()
    db = make_engine(s.worker_database_url, pool_size=4, app_name="agentq-test-offsets")
    celery = make_celery(s)
    bridge = Bridge(s, db, celery, batcher=MicroBatcher(10, 20), dispatch_threads=3,
                    publisher=HeldPublisher(jobs[0].job_id, gate))
    try:
        # when the four later batches complete first,
        _step_until(bridge, lambda: bridge.stats["batches"] >= 4)
        bridge.commit(force=True)
        # then the committed offset stays at the held batch's first record,
        assert bridge.consumer.committed(tp) in (None, first)
        assert bridge.tracker.committable().get(tp, first) == first
        # and once the held batch is durable too, everything is committed.
        gate.set()
        _step_until(bridge, lambda: bridge.stats["batches"] >= 5)
        bridge.commit(force=True)
        assert bridge.consumer.committed(tp) == last + 1
    finally:
        gate.set()
        bridge.shutdown()
        db.dispose()
