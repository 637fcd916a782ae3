"""Concurrent batch dispatch for the bridge: the durable part of a batch (ledger write, then
Celery publish) runs on a few threads so database and broker round trips overlap with polling and
parsing; completions are harvested on the bridge's own thread, which alone touches the offset
tracker, so a batch finishing out of order only marks its own records done.

With ``threads=0`` work runs inline (the simple, sequential bridge).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any


class Dispatcher:
    def __init__(self, threads: int = 3, max_pending: int | None = None) -> None:
        self.threads = threads
        self.max_pending = max_pending or max(1, 2 * threads)
        self._pool = (ThreadPoolExecutor(threads, thread_name_prefix="agentq-dispatch")
                      if threads > 0 else None)
        self._pending: list[tuple[Future[Any], Callable[[Any], None]]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, work: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``work`` (on a pool thread); ``done(result)`` runs later on the caller's thread.

        Blocks while ``max_pending`` batches are in flight (bounded memory, bounded lead)."""
        if self._pool is None:
            done(work())
            return
        while len(self._pending) >= self.max_pending:
            wait([f for f, _ in self._pending], return_when=FIRST_COMPLETED)
            self.harvest()
        self._pending.append((self._pool.submit(work), done))

    def harvest(self) -> int:
        """Run the completion of every finished batch, in any order; re-raises a batch's error."""
        finished: list[tuple[Future[Any], Callable[[Any], None]]] = []
        still: list[tuple[Future[Any], Callable[[Any], None]]] = []
        for pair in self._pending:
            (finished if pair[0].done() else still).append(pair)
        self._pending = still
        for f, cb in finished:
            cb(f.result())
        return len(finished)

    def wait_all(self) -> None:
        """Every submitted batch durable and harvested (before a commit on revoke, shutdown)."""
        while self._pending:
            wait([f for f, _ in self._pending])
            self.harvest()

    def close(self) -> None:
        try:
            self.wait_all()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
