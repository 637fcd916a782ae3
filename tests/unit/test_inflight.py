"""The bridge's in-flight cap: an upper bound that never undercounts, refreshed from the ledger."""

from __future__ import annotations

from dataclasses import replace

from agentq.config import Settings
from bridge.inflight import InflightGate


class FakeLedger:
    def __init__(self) -> None:
        self.inflight = 0
        self.calls: list[list[int]] = []

    def count(self, parts: list[int]) -> int:
        self.calls.append(parts)
        return self.inflight


def _gate(cap: int, poll: int, ledger: FakeLedger, clock: list[float]) -> InflightGate:
    s = Settings()
    s = replace(s, bridge=replace(s.bridge, max_inflight_jobs=cap, poll_max_records=poll))
    return InflightGate(s, db=None, refresh_s=1.0, counter=ledger.count,  # type: ignore[arg-type]
                        clock=lambda: clock[0])


def test_dispatches_between_ledger_counts_are_added_so_the_cap_holds():
    ledger, clock = FakeLedger(), [0.0]
    gate = _gate(cap=100, poll=10, ledger=ledger, clock=clock)
    # Given an empty ledger, the gate is open;
    assert not gate.full([0, 1], buffered=0)
    # when 85 jobs are dispatched before the next count, then one more poll could overflow.
    gate.dispatched(85)
    assert gate.estimate() == 85
    assert gate.full([0, 1], buffered=6)
    assert ledger.calls == [[0, 1]]  # no second round trip inside the refresh interval


def test_gate_reopens_when_the_ledger_shows_jobs_finished():
    ledger, clock = FakeLedger(), [0.0]
    gate = _gate(cap=100, poll=10, ledger=ledger, clock=clock)
    assert not gate.full([3], buffered=0)
    gate.dispatched(95)
    ledger.inflight = 95
    assert gate.full([3], buffered=0)
    ledger.inflight, clock[0] = 20, 2.0
    assert not gate.full([3], buffered=0)
    assert gate.estimate() == 20


def test_no_owned_partitions_counts_nothing():
    ledger, clock = FakeLedger(), [0.0]
    gate = _gate(cap=100, poll=10, ledger=ledger, clock=clock)
    assert not gate.full([], buffered=0)
    assert ledger.calls == []
