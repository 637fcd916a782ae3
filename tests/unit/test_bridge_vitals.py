"""The bridge's heartbeat (what `agentq check --bridge` reads) and its lag gauge, without Kafka."""

from __future__ import annotations

import os
import time

from kafka import TopicPartition

from bridge.vitals import Vitals, heartbeat_age_s
from cli.check import check_bridge


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class _Consumer:
    def __init__(self, ends: dict) -> None:
        self.ends, self.calls = ends, 0

    def assignment(self) -> set:
        return set(self.ends)

    def end_offsets(self, partitions, timeout_ms=None):
        self.calls += 1
        return {p: self.ends[p] for p in partitions}


def test_heartbeat_is_touched_at_most_once_a_second(tmp_path):
    hb, clock = tmp_path / "alive", _Clock()
    v = Vitals(hb, clock=clock)
    v.tick(None, {})
    assert hb.exists()
    os.utime(hb, (1, 1))
    clock.t += 0.5
    v.tick(None, {})
    assert hb.stat().st_mtime == 1  # not yet
    clock.t += 0.6
    v.tick(None, {})
    assert hb.stat().st_mtime > time.time() - 5


def test_lag_is_read_every_few_seconds_for_owned_partitions_only(monkeypatch):
    from agentq import metrics

    seen = []
    monkeypatch.setattr(metrics, "bridge_lag", lambda lags: seen.append(dict(lags)))
    tp = TopicPartition("t", 0)
    consumer, clock = _Consumer({tp: 120}), _Clock()
    v = Vitals(None, clock=clock)
    v.tick(consumer, {tp: 100})
    v.tick(consumer, {tp: 110})  # within lag_every_s: no second round trip
    clock.t += 5
    v.tick(consumer, {tp: 115})
    assert consumer.calls == 2 and seen == [{("t", 0): 20}, {("t", 0): 5}]


def test_a_failing_lag_read_never_reaches_the_loop():
    class Broken(_Consumer):
        def end_offsets(self, partitions, timeout_ms=None):
            raise TimeoutError("broker gone")

    tp = TopicPartition("t", 0)
    Vitals(None).tick(Broken({tp: 1}), {tp: 0})  # logged, not raised


def test_check_bridge_follows_the_heartbeat_age(tmp_path):
    hb = tmp_path / "alive"
    assert check_bridge(hb, 30)[0] is False  # no beat yet
    assert check_bridge(None, 30)[0] is False  # not configured
    hb.touch()
    ok, detail = check_bridge(hb, 30)
    assert ok and "last beat" in detail
    os.utime(hb, (time.time() - 60, time.time() - 60))
    assert check_bridge(hb, 30)[0] is False
    assert 59 < heartbeat_age_s(hb) < 70
