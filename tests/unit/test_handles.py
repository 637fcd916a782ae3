"""JobHandle: resolution once, sync and asyncio waiting, and the memory one handle costs."""

import asyncio
import threading
import time
import tracemalloc
import uuid

import pytest

from producers.errors import ReplyTimeout
from producers.handles import JobHandle, as_completed, as_completed_async, wait
from producers.replies import JobResult


class Owner:
    """What a handle needs of its client: the lock and the timeout diagnosis."""

    def __init__(self):
        self.lock = threading.Lock()

    def timeout_error(self, job_id, timeout_s):
        return ReplyTimeout(job_id, timeout_s, "the ledger says running", "running")


def _handles(n):
    owner = Owner()
    return [JobHandle(str(uuid.uuid4()), owner) for _ in range(n)]


def _ok(h, label=1):
    return JobResult(h.job_id, "succeeded", "digits-mlp", result={"label": label})


def test_a_handle_resolves_once_and_ignores_duplicates():
    (h,) = _handles(1)
    assert not h.done()
    assert h.settle(result=_ok(h, 1)) is True
    assert h.settle(result=_ok(h, 2)) is False
    assert h.done() and h.result(0).label == 1


def test_result_waits_for_another_thread_and_times_out_with_the_ledger_view():
    a, b = _handles(2)
    threading.Timer(0.05, a.settle, kwargs={"result": _ok(a)}).start()
    assert a.result(5).ok
    t0 = time.monotonic()
    with pytest.raises(ReplyTimeout, match="ledger says running") as e:
        b.result(0.1)
    assert e.value.ledger_status == "running" and time.monotonic() - t0 < 2
    assert not b._callbacks  # a timed-out wait leaves nothing behind


def test_wait_and_as_completed_return_every_result():
    hs = _handles(20)
    for h in reversed(hs):
        threading.Thread(target=h.settle, kwargs={"result": _ok(h)}).start()
    assert [r.job_id for r in wait(hs, timeout=5)] == [h.job_id for h in hs]
    more = _handles(3)
    more[1].settle(result=_ok(more[1]))
    it = as_completed(more, timeout=0.2)
    assert next(it).job_id == more[1].job_id
    with pytest.raises(ReplyTimeout):
        next(it)


def test_asyncio_waits_resolve_from_another_thread_without_blocking_the_loop():
    hs = _handles(1000)

    async def main():
        waits = [asyncio.ensure_future(h.result_async(10)) for h in hs[:500]]
        threading.Thread(target=lambda: [h.settle(result=_ok(h)) for h in hs]).start()
        got = await asyncio.gather(*waits, *(h for h in hs[500:990]))
        streamed = [r async for r in as_completed_async(hs[990:], timeout=5)]
        return got, streamed

    got, streamed = asyncio.run(main())
    assert [r.job_id for r in got] == [h.job_id for h in hs[:990]]
    assert sorted(r.job_id for r in streamed) == sorted(h.job_id for h in hs[990:])


def test_an_asyncio_timeout_raises_reply_timeout():
    (h,) = _handles(1)
    with pytest.raises(ReplyTimeout):
        asyncio.run(h.result_async(0.05))


def test_ten_thousand_outstanding_handles_cost_under_four_megabytes():
    ids = [str(uuid.uuid4()) for _ in range(10_000)]
    owner = Owner()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    pending = {jid: JobHandle(jid, owner) for jid in ids}
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(pending) == 10_000 and used < 4 * 1024 * 1024, used
