"""The Celery queues batches travel on, how deep they are, and the one way to publish a batch."""

from __future__ import annotations

import time
from typing import Any

import redis

from workers.batch import JobBatch

QUEUES = ("cpu", "gpu")
RUN_BATCH = "agentq.run_batch"  # the task name every batch is published to
RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}


def queue_names(prefix: str = "") -> list[str]:
    """The Celery queue names, ``<prefix>cpu`` and ``<prefix>gpu``."""
    return [prefix + q for q in QUEUES]


def queue_depths(client: redis.Redis, prefix: str = "") -> dict[str, int]:
    """Batches waiting per Celery queue (``<prefix>cpu``, ``<prefix>gpu``), one round trip."""
    pipe = client.pipeline()
    for q in QUEUES:
        pipe.llen(prefix + q)
    return dict(zip(QUEUES, (int(n) for n in pipe.execute()), strict=True))


def queue_depth(client: redis.Redis, prefix: str = "") -> int:
    """Batches waiting in all the Celery queues."""
    return sum(queue_depths(client, prefix).values())


def publish(celery_app: Any, batch: JobBatch, queue: str, countdown_s: float | None = None,
            retry_policy: dict[str, Any] | None = None) -> None:
    """Send one batch to a queue as a ``run_batch`` task (the broker retries per the policy)."""
    payload = batch.to_payload()
    payload["sent_ms"] = int(time.time() * 1000)  # the celery stage of agentq_stage_seconds
    celery_app.send_task(RUN_BATCH, args=[payload], queue=queue,
                         countdown=countdown_s, retry=True,
                         retry_policy=retry_policy or RETRY_POLICY)
