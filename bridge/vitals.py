"""Side concerns of the bridge's loop: a heartbeat file for health checks and the lag gauge.

``agentq check --bridge`` (the compose health check) passes while the heartbeat file is fresh:
the loop that polls Kafka, dispatches and commits is turning, which says more than Kafka, Redis
and PostgreSQL answering. A failure here is logged and skipped, never raised into the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from agentq import metrics
from agentq.log import get_logger

log = get_logger("agentq.bridge")


class Vitals:
    def __init__(self, heartbeat_file: Path | None, beat_every_s: float = 1.0,
                 lag_every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.heartbeat_file = heartbeat_file
        self.beat_every_s, self.lag_every_s, self.clock = beat_every_s, lag_every_s, clock
        self._beat_at = self._lag_at = float("-inf")

    def tick(self, consumer: Any, next_offsets: Mapping[Any, int]) -> None:
        now = self.clock()
        if self.heartbeat_file is not None and now - self._beat_at >= self.beat_every_s:
            self._beat_at = now
            try:
                self.heartbeat_file.touch()
            except OSError as e:  # a health signal must never stop the bridge
                log.warning("heartbeat_failed", path=str(self.heartbeat_file), error=str(e))
        if next_offsets and now - self._lag_at >= self.lag_every_s:
            self._lag_at = now
            self.export_lag(consumer, next_offsets)

    def export_lag(self, consumer: Any, next_offsets: Mapping[Any, int]) -> None:
        """``agentq_bridge_lag_records``: log end minus the next offset this bridge will read,
        per partition it owns (one ListOffsets round trip)."""
        owned = [tp for tp in consumer.assignment() if tp in next_offsets]
        try:
            ends = consumer.end_offsets(owned, timeout_ms=1000) if owned else {}
        except Exception as e:  # a lag reading must never stop the bridge
            log.warning("lag_read_failed", error=str(e)[:200])
            return
        metrics.bridge_lag({(tp.topic, tp.partition): max(0, end - next_offsets[tp])
                            for tp, end in ends.items() if end is not None})

    def forget(self, partitions: Iterable[Any]) -> None:
        metrics.bridge_lag_forget([(tp.topic, tp.partition) for tp in partitions])


def heartbeat_age_s(path: Path, now: float | None = None) -> float | None:
    """Seconds since the bridge last touched its heartbeat file; None when there is none."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return (time.time() if now is None else now) - mtime
