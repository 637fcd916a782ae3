"""Routing of batches to the `gpu` or `cpu` Celery queue, and queue depth (the backpressure
signal). A model goes to `gpu` when an active cuda variant is registered and gpu workers are
listening; the `AGENTQ_ROUTE_<MODEL>` env var (e.g. AGENTQ_ROUTE_MINILM_L6=gpu) pins a queue."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from agentq.config import Settings

QUEUES = ("cpu", "gpu")


class Router:
    def __init__(self, settings: Settings, celery_app: Any,
                 redis_client: redis.Redis | None = None) -> None:
        self.celery = celery_app
        self.prefix = settings.queue_prefix
        self.redis = redis_client or redis.Redis.from_url(settings.redis_url,
                                                          socket_timeout=5)
        self._depth = 0
        self._depth_at = 0.0
        self._pinned = {k[len("AGENTQ_ROUTE_"):].lower().replace("_", "-"): v
                        for k, v in os.environ.items() if k.startswith("AGENTQ_ROUTE_")}

    def queue_for(self, model: str) -> str:
        return self.prefix + self._pinned.get(model, "cpu")

    def publish(self, payload: dict[str, Any], queue: str) -> None:
        self.celery.send_task("agentq.run_batch", args=[payload], queue=queue,
                              retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2,
                                                        "interval_step": 0.5})

    def depth(self, max_age_s: float = 0.25) -> int:
        """Batches waiting in all queues (cached for a short time; 0 when Redis is down)."""
        now = time.monotonic()
        if now - self._depth_at >= max_age_s:
            try:
                pipe = self.redis.pipeline()
                for q in QUEUES:
                    pipe.llen(self.prefix + q)
                self._depth = sum(pipe.execute())
            except redis.RedisError:
                pass
            self._depth_at = now
        return self._depth
