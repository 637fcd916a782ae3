"""Producer admission control on live Kafka: a stalled backlog refuses, a draining one admits."""

from __future__ import annotations

import time

import pytest

from ops.lag import KafkaBacklog
from producers.admission import Admission
from producers.contract import JobMessage
from producers.errors import Backpressure
from producers.producer import JobProducer
from tests.support import wait_terminal

pytestmark = pytest.mark.integration


def _job() -> JobMessage:
    return JobMessage.new("digits-mlp", {"pixels": [1.0] * 64})


@pytest.mark.timeout(180)
def test_send_refuses_while_nothing_drains_and_waits_until_the_backlog_drains(stack, worker_db):
    s = stack.settings
    backlog = KafkaBacklog(s.kafka, window_s=5)
    admission = Admission(backlog, limit_s=5.0, refresh_s=0.5)
    try:
        with JobProducer(s.kafka, s.limits, admission=admission) as producer:
            # Given 400 jobs on the topic and no bridge consuming them,
            first = [_job() for _ in range(400)]
            for job in first:
                producer.send(job, admission_timeout_s=0)  # drain rate unknown yet: admitted
            producer.flush()
            time.sleep(1.0)
            admission.backlog_s()
            time.sleep(0.6)
            # when the backlog does not drain at all, then a send is refused with Backpressure,
            with pytest.raises(Backpressure) as refused:
                producer.send(_job(), admission_timeout_s=0)
            assert refused.value.backlog_s > 5.0
            # and once a bridge and a worker drain it, a blocking send is admitted.
            stack.worker(concurrency=1)
            stack.bridge()
            late = _job()
            producer.send(late, admission_timeout_s=120)
            producer.flush()
            assert admission.backlog_s() <= 5.0
        statuses = wait_terminal(worker_db, [j.job_id for j in first] + [late.job_id], 120)
        assert set(statuses.values()) == {"succeeded"}, stack.logs()
    finally:
        backlog.close()
