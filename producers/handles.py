"""``JobHandle``: the future of one submitted job, resolved by its reply event (``JobClient``).

A handle is small (slots, no lock or event of its own) so a client can hold many thousands;
whoever waits brings the waiting: ``result`` a ``threading.Event``, ``result_async`` an asyncio
future on the caller's loop, ``as_completed`` one queue for many handles. The client resolves a
handle on its consumer thread and runs its done-callbacks there.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from producers.errors import ReplyTimeout
from producers.replies import JobResult

Callback = Callable[["JobHandle"], None]


class Resolver(Protocol):
    lock: threading.Lock

    def timeout_error(self, job_id: str, timeout_s: float) -> ReplyTimeout: ...


class JobHandle:
    __slots__ = ("job_id", "submitted_at", "_owner", "_result", "_error", "_callbacks")

    def __init__(self, job_id: str, owner: Resolver) -> None:
        self.job_id = job_id
        self.submitted_at = time.time()
        self._owner = owner
        self._result: JobResult | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callback] | None = None

    def __repr__(self) -> str:
        state = self._result.status if self._result else ("error" if self._error else "pending")
        return f"JobHandle({self.job_id}, {state})"

    def done(self) -> bool:
        return self._result is not None or self._error is not None

    def outcome(self) -> JobResult:
        """The result of a done handle (its error raised); call only when ``done()``."""
        if self._error is not None:
            raise self._error
        assert self._result is not None, "outcome() of a pending handle"
        return self._result

    # -- resolution (the client's consumer thread, or submit's errback) ------------------------
    def settle(self, result: JobResult | None = None, error: BaseException | None = None) -> bool:
        """Resolve once; later replies (duplicates) are ignored. Returns True when it resolved."""
        with self._owner.lock:
            if self.done():
                return False
            self._result, self._error = result, error
            callbacks, self._callbacks = self._callbacks or [], None
        for cb in callbacks:
            cb(self)
        return True

    def add_done_callback(self, fn: Callback) -> None:
        """``fn(handle)`` once resolved: at once when already done, else on the resolving thread."""
        with self._owner.lock:
            if not self.done():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    def remove_done_callback(self, fn: Callback) -> None:
        with self._owner.lock:
            if self._callbacks and fn in self._callbacks:
                self._callbacks.remove(fn)

    # -- waiting -------------------------------------------------------------------------------
    def result(self, timeout: float | None = None) -> JobResult:
        """The job's result (any terminal status; see ``JobResult.raise_for_status``).

        Raises :class:`ReplyTimeout` after ``timeout`` seconds, saying what the ledger knows."""
        if not self.done():
            ev = threading.Event()
            cb: Callback = lambda _h: ev.set()  # noqa: E731
            self.add_done_callback(cb)
            if not ev.wait(timeout):
                self.remove_done_callback(cb)
                raise self._owner.timeout_error(self.job_id, timeout or 0.0)
        return self.outcome()

    async def result_async(self, timeout: float | None = None) -> JobResult:
        """``result`` for asyncio: awaits on the running loop without blocking it."""
        if not self.done():
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            cb = _wake(loop, fut)
            self.add_done_callback(cb)
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                self.remove_done_callback(cb)
                err = await loop.run_in_executor(None, self._owner.timeout_error, self.job_id,
                                                 timeout or 0.0)
                raise err from None
        return self.outcome()

    def __await__(self) -> Any:
        return self.result_async().__await__()


def _wake(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> Callback:
    def settle(_h: JobHandle) -> None:
        try:
            loop.call_soon_threadsafe(_set_once, fut)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass
    return settle


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def wait(handles: Sequence[JobHandle], timeout: float | None = None) -> list[JobResult]:
    """Every handle's result, in order, within ``timeout`` seconds overall."""
    end = None if timeout is None else time.monotonic() + timeout
    return [h.result(None if end is None else max(0.0, end - time.monotonic()))
            for h in handles]


def as_completed(handles: Iterable[JobHandle], timeout: float | None = None
                 ) -> Iterator[JobResult]:
    """Results as they arrive; ReplyTimeout (for a job still pending) after ``timeout``."""
    hs = list(handles)
    done: queue.SimpleQueue[JobHandle] = queue.SimpleQueue()
    for h in hs:
        h.add_done_callback(done.put)
    end = None if timeout is None else time.monotonic() + timeout
    for _ in hs:
        try:
            h = done.get(timeout=None if end is None else max(0.0, end - time.monotonic()))
        except queue.Empty:
            late = next(h for h in hs if not h.done())
            raise late._owner.timeout_error(late.job_id, timeout or 0.0) from None
        yield h.outcome()


async def as_completed_async(handles: Iterable[JobHandle], timeout: float | None = None
                             ) -> AsyncIterator[JobResult]:
    """``async for result in as_completed_async(handles)``: results as they arrive."""
    hs = list(handles)
    loop = asyncio.get_running_loop()
    done: asyncio.Queue[JobHandle] = asyncio.Queue()

    def arrived(h: JobHandle) -> None:
        try:
            loop.call_soon_threadsafe(done.put_nowait, h)
        except RuntimeError:  # the loop is closed
            pass

    for h in hs:
        h.add_done_callback(arrived)
    end = None if timeout is None else loop.time() + timeout
    for _ in hs:
        try:
            h = await asyncio.wait_for(done.get(), None if end is None else
                                       max(0.0, end - loop.time()))
        except TimeoutError:
            late = next(h for h in hs if not h.done())
            err = await loop.run_in_executor(None, late._owner.timeout_error, late.job_id,
                                             timeout or 0.0)
            raise err from None
        yield h.outcome()
