"""Admission control for producers: refuse (or wait) while the backlog is too long.

The backlog is measured in seconds — jobs waiting ÷ measured drain rate — so a limit means the
same thing for a fast model and a slow one. ``Admission.admit`` raises :class:`Backpressure`
right away (``timeout_s=0``) or blocks, re-reading the backlog, up to ``timeout_s`` before
raising: the caller's choice, per producer or per call.

Sources of the backlog (anything with ``read() -> (backlog_jobs, drain_jobs_s | None)``):
``ops.lag.KafkaBacklog`` (lag of the bridge's consumer group, drained at the rate its committed
offsets advance — Kafka only, no database credentials needed), passed in by the caller, or any
fake in tests. While the
drain rate is still unknown (first reading) jobs are admitted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from producers.errors import Backpressure, ProducerError


class BacklogSource(Protocol):
    def read(self) -> tuple[int, float | None]:
        """(jobs waiting, jobs drained per second or None while unknown)."""
        ...


class Admission:
    def __init__(self, source: BacklogSource, limit_s: float, timeout_s: float = 0.0,
                 refresh_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.source = source
        self.limit_s = limit_s
        self.timeout_s = timeout_s
        self.refresh_s = refresh_s
        self.clock = clock
        self.sleep = sleep
        self._backlog_s = 0.0
        self._at = float("-inf")

    def backlog_s(self) -> float:
        """Seconds to drain what waits now (cached for ``refresh_s``)."""
        now = self.clock()
        if now - self._at >= self.refresh_s:
            try:
                jobs, drain = self.source.read()
            except Exception as e:
                raise ProducerError(f"cannot measure the backlog: {e}") from e
            if jobs <= 0 or drain is None:
                self._backlog_s = 0.0
            else:
                self._backlog_s = jobs / drain if drain > 0 else math.inf
            self._at = now
        return self._backlog_s

    def admit(self, timeout_s: float | None = None) -> None:
        """Return when the backlog is under the limit; raise Backpressure after ``timeout_s``."""
        wait = self.timeout_s if timeout_s is None else timeout_s
        end = self.clock() + wait
        while True:
            backlog = self.backlog_s()
            if backlog <= self.limit_s:
                return
            left = end - self.clock()
            if left <= 0:
                raise Backpressure(backlog, self.limit_s)
            self.sleep(min(self.refresh_s, left))
