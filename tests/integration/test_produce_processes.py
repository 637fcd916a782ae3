"""`agentq produce --processes N` on a live broker: N producer processes send exactly the
requested jobs between them, each once, each a valid v1 message keyed by its job_id."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from agentq.config import Limits
from producers.cli import produce_in_processes
from producers.contract import JobMessage, validate_message
from producers.topics import delete_topics, ensure_topics
from tests.support import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_producer_processes_send_every_job_of_the_count_once(services):
    # Given a fresh jobs topic,
    s = replace(services, kafka=replace(services.kafka,
                                        jobs_topic=f"agentq.test.produce-{uuid.uuid4().hex[:8]}"))
    ensure_topics(s.kafka)
    try:
        # when three producer processes send 3,001 synthetic jobs between them,
        summary = produce_in_processes(s, 3, "digits-mlp", 3001, quiet=True)
        records = read_topic(s, s.kafka.jobs_topic)
    finally:
        delete_topics(s.kafka, [s.kafka.jobs_topic])
    # then each process sent its share, and the topic holds 3,001 distinct valid jobs,
    assert [p["sent"] for p in summary["processes"]] == [1001, 1000, 1000]
    assert summary["sent"] == 3001 and summary["invalid"] == 0
    assert len(records) == 3001 and len({key for key, _ in records}) == 3001
    for key, value in records:
        job = validate_message(value, Limits())
        assert isinstance(job, JobMessage) and job.job_id == key, value
