"""Concurrent dispatch: batches completing out of order never commit past an unfinished one."""

import threading

import pytest

from bridge.dispatch import Dispatcher
from bridge.offsets import OffsetTracker

pytestmark = pytest.mark.timeout(20)


def test_out_of_order_batch_completion_never_commits_past_an_unfinished_record():
    tracker = OffsetTracker()
    tracker.assign(["p0"])
    d = Dispatcher(threads=3, max_pending=10)
    gates = [threading.Event() for _ in range(3)]
    # Given three batches of offsets 0-9, 10-19, 20-29 in flight on three threads,
    for i, gate in enumerate(gates):
        tickets = [tracker.received("p0", o) for o in range(10 * i, 10 * i + 10)]
        d.submit(lambda g=gate: g.wait(10) or "ok",
                 lambda _res, ts=tickets: [tracker.done(t) for t in ts])
    # when the last and the middle batch finish first,
    for k in (2, 1):
        gates[k].set()
    while d.harvest() == 0 or len(d) > 1:
        pass
    # then nothing past the first record is committable,
    assert tracker.committable() == {"p0": 0}
    # and when the first finishes too, everything is.
    gates[0].set()
    d.wait_all()
    assert tracker.committable() == {"p0": 30}
    d.close()


def test_completion_after_revoke_cannot_commit():
    tracker = OffsetTracker()
    tracker.assign(["p0"])
    d = Dispatcher(threads=1)
    gate = threading.Event()
    ticket = tracker.received("p0", 5)
    d.submit(lambda: gate.wait(10), lambda _r: tracker.done(ticket))
    # The partition is revoked and reassigned (a new generation) while the batch is in flight.
    tracker.revoke(["p0"])
    tracker.assign(["p0"])
    tracker.received("p0", 5)
    gate.set()
    d.wait_all()
    assert tracker.committable() == {"p0": 5}  # the late completion did not mark offset 5
    d.close()


def test_submit_blocks_at_max_pending_and_errors_surface_on_harvest():
    d = Dispatcher(threads=2, max_pending=2)
    done: list[int] = []

    def boom() -> int:
        raise RuntimeError("ledger down for good")

    d.submit(lambda: 1, done.append)
    d.submit(boom, done.append)
    with pytest.raises(RuntimeError):
        d.submit(lambda: 3, done.append)  # waits for a slot, harvests, re-raises the failure
        d.wait_all()
    d.wait_all()
    d.close()
    assert 1 in done


def test_inline_dispatcher_runs_work_and_completion_immediately():
    d = Dispatcher(threads=0)
    out: list[int] = []
    d.submit(lambda: 7, out.append)
    assert out == [7] and len(d) == 0
