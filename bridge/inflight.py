"""The bridge's in-flight cap: jobs dispatched to Celery and not yet terminal never exceed
``settings.bridge.max_inflight_jobs`` for one bridge.

The count is an upper bound kept without a round trip per batch: the ledger's count of queued and
running jobs on the partitions this bridge owns (refreshed every ``refresh_s``, in the bridge's own
thread, so it includes every earlier dispatch) plus what was dispatched since, plus what the
bridge holds in memory. Jobs only leave the in-flight set after that count, so the estimate never
undercounts. With concurrent dispatch a batch being written on a dispatch thread is still pending
in the offset tracker (``buffered``) until its completion is harvested, and only then counted as
dispatched: it may be counted twice for a moment (safe), never zero times. The bridge pauses while
``estimate + poll_max_records`` (what one poll may add) is over the cap, which keeps the true
number under it at all times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine

from agentq import metrics
from agentq.config import Settings
from agentq.log import get_logger
from storage.db import connection
from storage.errors import StorageError
from storage.queries import count_inflight

log = get_logger("agentq.bridge")


class InflightGate:
    def __init__(self, settings: Settings, db: Engine, refresh_s: float = 0.5,
                 counter: Callable[[list[int]], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = settings.bridge.max_inflight_jobs
        self.margin = settings.bridge.poll_max_records
        self.topic = settings.kafka.jobs_topic
        self.refresh_s = refresh_s
        self.clock = clock
        self._count = counter or (lambda parts: self._count_ledger(db, parts))
        self._counted = 0
        self._since = 0
        self._at = float("-inf")
        if self.cap <= self.margin:
            log.warning("inflight_cap_below_poll_size", cap=self.cap, poll_max_records=self.margin)

    def _count_ledger(self, db: Engine, partitions: list[int]) -> int:
        with connection(db) as conn:
            return count_inflight(conn, self.topic, partitions)

    def dispatched(self, n: int) -> None:
        self._since += n

    def estimate(self, buffered: int = 0) -> int:
        return self._counted + self._since + buffered

    def _refresh(self, partitions: Iterable[Any]) -> None:
        now = self.clock()
        if now - self._at < self.refresh_s:
            return
        parts = sorted({getattr(p, "partition", p) for p in partitions})
        try:
            self._counted = self._count(parts) if parts else 0
            self._since = 0
            self._at = now
        except StorageError as e:  # keep the old bound; it only grows until the next count
            log.warning("inflight_count_failed", error=str(e)[:200])

    def full(self, partitions: Iterable[Any], buffered: int, queue_depth: int = 0,
             paused: bool = False) -> bool:
        """True when one more poll could push in-flight jobs over the cap."""
        self._refresh(partitions)
        est = self.estimate(buffered)
        metrics.bridge_state(queue_depth, est, self.cap, paused)
        return est + self.margin > self.cap
