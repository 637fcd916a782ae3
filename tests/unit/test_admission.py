"""Producer admission control: backlog in seconds over a limit; raise or wait (caller's choice)."""

from __future__ import annotations

import math

import pytest

from agentq.config import KafkaSettings
from producers.admission import Admission
from producers.contract import JobMessage
from producers.errors import Backpressure
from producers.producer import JobProducer


class FakeLag:
    """An in-memory backlog source: (jobs waiting, drain rate)."""

    def __init__(self, jobs: int, drain: float | None) -> None:
        self.jobs, self.drain = jobs, drain

    def read(self) -> tuple[int, float | None]:
        return self.jobs, self.drain


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.on_sleep = None

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s
        if self.on_sleep:
            self.on_sleep(self.t)


def _adm(src: FakeLag, clock: Clock, limit_s: float = 10.0, timeout_s: float = 0.0) -> Admission:
    return Admission(src, limit_s=limit_s, timeout_s=timeout_s, refresh_s=0.5, clock=clock,
                     sleep=clock.sleep)


@pytest.mark.parametrize("jobs,drain,expected_s", [
    (0, 100.0, 0.0),  # idle
    (500, 100.0, 5.0),  # under the limit
    (5_000, 100.0, 50.0),  # over
    (10, 0.0, math.inf),  # waiting jobs, nothing drains
    (5_000, None, 0.0),  # drain rate not measured yet: admit
])
def test_backlog_is_lag_divided_by_drain_rate(jobs, drain, expected_s):
    assert _adm(FakeLag(jobs, drain), Clock()).backlog_s() == expected_s


def test_over_the_limit_raises_backpressure_at_once():
    adm = _adm(FakeLag(5_000, 100.0), Clock())
    with pytest.raises(Backpressure) as e:
        adm.admit()
    assert e.value.backlog_s == 50.0 and e.value.limit_s == 10.0


def test_blocking_admission_returns_when_the_backlog_drains():
    src, clock = FakeLag(5_000, 100.0), Clock()
    # Given a backlog that drains to 500 jobs after 3 s,
    clock.on_sleep = lambda t: setattr(src, "jobs", 500 if t >= 3 else 5_000)
    # when the caller is willing to wait 10 s, then send is admitted after ~3 s.
    _adm(src, clock, timeout_s=10.0).admit()
    assert 3.0 <= clock.t < 4.0


def test_blocking_admission_gives_up_after_its_timeout():
    clock = Clock()
    with pytest.raises(Backpressure):
        _adm(FakeLag(5_000, 100.0), clock).admit(timeout_s=2.0)
    assert clock.t == pytest.approx(2.0)


class _StubKafka:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, topic: str, value: bytes, key: bytes) -> str:
        self.sent.append(value)
        return "future"


def test_job_producer_send_refuses_over_the_limit_and_sends_under_it(monkeypatch):
    stub = _StubKafka()
    monkeypatch.setattr("producers.producer.KafkaProducer", lambda **_: stub)
    src = FakeLag(5_000, 100.0)
    producer = JobProducer(KafkaSettings(), admission=Admission(src, limit_s=10.0, refresh_s=0))
    job = JobMessage.new("digits-mlp", {"pixels": [0] * 64})
    with pytest.raises(Backpressure):
        producer.send(job)
    assert stub.sent == []
    src.jobs = 100
    assert producer.send(job) == "future" and len(stub.sent) == 1
