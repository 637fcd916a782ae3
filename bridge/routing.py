"""Routing of batches to the `gpu` or `cpu` Celery queue, and queue depth (the backpressure
signal).

A model goes to `gpu` when the registry has an active cuda variant for it and a live worker
consumes the gpu queue; when the gpu queue is deep and the model also has an active cpu variant,
batches overflow to `cpu`. ``settings.routes`` (``AGENTQ_ROUTE_<MODEL>``, e.g.
AGENTQ_ROUTE_MINILM_L6=gpu) pins a queue. GPU liveness is refreshed in a background thread
(a Celery ``active_queues`` broadcast),
only while some model has a cuda variant, so the bridge's loop never waits on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import redis

from agentq.config import Settings
from agentq.log import get_logger
from workers.queues import QUEUES, queue_depths

log = get_logger("agentq.routing")

GPU_OVERFLOW_DEPTH = 100  # batches waiting on gpu before a cpu-capable model spills to cpu


def choose_queue(devices: frozenset[str] | set[str], gpu_live: bool, depths: Mapping[str, int],
                 pinned: str | None = None, overflow_depth: int = GPU_OVERFLOW_DEPTH) -> str:
    """`gpu` or `cpu` for one batch. Pure: placement, liveness and depths are passed in."""
    if pinned in QUEUES:
        return pinned  # type: ignore[return-value]
    if "cuda" not in devices or not gpu_live:
        return "cpu"
    gpu_depth = depths.get("gpu", 0)
    if "cpu" in devices and gpu_depth >= overflow_depth and depths.get("cpu", 0) < gpu_depth:
        return "cpu"
    return "gpu"


class Router:
    def __init__(self, settings: Settings, celery_app: Any,
                 redis_client: redis.Redis | None = None,
                 gpu_check_interval_s: float = 15.0) -> None:
        self.celery = celery_app
        self.prefix = settings.queue_prefix
        self.redis = redis_client or redis.Redis.from_url(settings.redis_url,
                                                          socket_timeout=5)
        self._depths: dict[str, int] = {q: 0 for q in QUEUES}
        self._depth_at = 0.0
        self._pinned = dict(settings.routes)
        self._placements: dict[str, frozenset[str]] = {}
        self.gpu_live = False
        self._gpu_interval_s = gpu_check_interval_s
        self._gpu_thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- placement ---------------------------------------------------------------------------
    def set_placements(self, placed: dict[str, frozenset[str]]) -> None:
        """Called by the bridge with each registry refresh."""
        self._placements = placed
        if any("cuda" in d for d in placed.values()) and self._gpu_thread is None:
            self._gpu_thread = threading.Thread(target=self._watch_gpu, daemon=True,
                                                name="agentq-gpu-liveness")
            self._gpu_thread.start()

    def _watch_gpu(self) -> None:
        while not self._stop.is_set():
            live = self._gpu_consumers()
            if live != self.gpu_live:
                log.info("gpu_workers_changed", live=live)
            self.gpu_live = live
            self._stop.wait(self._gpu_interval_s)

    def _gpu_consumers(self) -> bool:
        try:
            replies = self.celery.control.inspect(timeout=1.0).active_queues() or {}
        except Exception as e:  # broker down: keep routing to cpu, which always has a consumer
            log.warning("gpu_liveness_check_failed", error=str(e)[:200])
            return False
        want = self.prefix + "gpu"
        return any(q.get("name") == want for qs in replies.values() for q in qs or [])

    def queue_for(self, model: str) -> str:
        q = choose_queue(self._placements.get(model, frozenset({"cpu"})), self.gpu_live,
                         self.depths(), self._pinned.get(model))
        return self.prefix + q

    # -- depth -------------------------------------------------------------------------------
    def depths(self, max_age_s: float = 0.25) -> dict[str, int]:
        """Batches waiting per queue (cached briefly; last known values when Redis is down)."""
        now = time.monotonic()
        if now - self._depth_at >= max_age_s:
            try:
                self._depths = queue_depths(self.redis, self.prefix)
            except redis.RedisError:
                pass
            self._depth_at = now
        return self._depths

    def depth(self, max_age_s: float = 0.25) -> int:
        """Batches waiting in all queues."""
        return sum(self.depths(max_age_s).values())

    def close(self) -> None:
        self._stop.set()
