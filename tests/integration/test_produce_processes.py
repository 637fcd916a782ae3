"""`agentq produce --processes N` on a live broker: N producer processes send exactly the
requested jobs between them, each once, each a valid v1 message keyed by its job_id."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pytest
from kafka import KafkaConsumer, TopicPartition

from agentq.config import Limits
from producers.cli import produce_in_processes
from producers.contract import JobMessage, validate_message
from producers.topics import delete_topics, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _records(settings, topic):
    consumer = KafkaConsumer(group_id=None, **settings.kafka.client_options())
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=1000).values():
                out += [(m.key.decode(), json.loads(m.value)) for m in batch]
        return out
    finally:
        consumer.close()


def test_producer_processes_send_every_job_of_the_count_once(services):
    # Given a fresh jobs topic,
    s = replace(services, kafka=replace(services.kafka,
                                        jobs_topic=f"agentq.test.produce-{uuid.uuid4().hex[:8]}"))
    ensure_topics(s.kafka)
    try:
        # when three producer processes send 3,001 synthetic jobs between them,
        summary = produce_in_processes(s, 3, "digits-mlp", 3001, quiet=True)
        records = _records(s, s.kafka.jobs_topic)
    finally:
        delete_topics(s.kafka, [s.kafka.jobs_topic])
    # then each process sent its share, and the topic holds 3,001 distinct valid jobs,
    assert [p["sent"] for p in summary["processes"]] == [1001, 1000, 1000]
    assert summary["sent"] == 3001 and summary["invalid"] == 0
    assert len(records) == 3001 and len({key for key, _ in records}) == 3001
    for key, value in records:
        job = validate_message(value, Limits())
        assert isinstance(job, JobMessage) and job.job_id == key, value
