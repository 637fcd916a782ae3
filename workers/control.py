"""What a Celery user checks on a worker: its queues against the prefix, and `celery inspect`.

* At start-up a worker whose ``-Q`` queues are not agentq's queues for ``AGENTQ_QUEUE_PREFIX``
  logs ``worker_queues_not_configured`` (``-Q cpu`` with a prefix set consumes nothing).
* ``celery -A workers.app inspect agentq [-d NAME]``: this worker's queues (consumed and
  expected), device and engine mode, the models on disk, and tasks run by name; liveness is
  Celery's own ``celery -A workers.app inspect ping``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from celery.worker import state as worker_state
from celery.worker.control import inspect_command

from agentq.config import Settings
from agentq.log import get_logger
from workers.queues import QUEUES, queue_names

log = get_logger("agentq.worker")
_STARTED = time.time()


def unconfigured_queues(consumed: Iterable[str], prefix: str) -> list[str]:
    """The queues a worker consumes that are not ``<prefix>cpu`` / ``<prefix>gpu``."""
    expected = set(queue_names(prefix))
    return sorted(q for q in consumed if q not in expected)


def check_queues(consumed: Iterable[str], prefix: str) -> list[str]:
    """Warn (once, at start-up) about consumed queues that no agentq bridge publishes to."""
    consumed = sorted(consumed)
    unknown = unconfigured_queues(consumed, prefix)
    if unknown:
        ours = sorted(set(consumed) - set(unknown))
        suggest = [prefix + q for q in QUEUES if any(u.endswith(q) for u in unknown)]
        log.warning("worker_queues_not_configured", queues=unknown, consumed=consumed,
                    expected=queue_names(prefix), queue_prefix=prefix,
                    runs_agentq_batches=bool(ours),
                    hint="start the worker with -Q "
                         + ",".join(sorted(set(ours) | set(suggest or queue_names(prefix)))))
    return unknown


def models_on_disk(settings: Settings) -> dict[str, list[str]]:
    """Built model versions under the models directory (those a worker can load)."""
    root = settings.worker.models_dir
    if not root.is_dir():
        return {}
    return {m.name: sorted(v.name for v in m.iterdir() if (v / "manifest.json").exists())
            for m in sorted(root.iterdir()) if m.is_dir()}


def worker_info(settings: Settings, consumed: Iterable[str]) -> dict[str, Any]:
    consumed = sorted(consumed)
    return {
        "queues": consumed,
        "expected_queues": queue_names(settings.queue_prefix),
        "unconfigured_queues": unconfigured_queues(consumed, settings.queue_prefix),
        "queue_prefix": settings.queue_prefix,
        "device": settings.worker.device,
        "engine_mode": settings.worker.engine_mode,
        "models": models_on_disk(settings),
        "tasks_total": dict(worker_state.total_count),
        "tasks_active": len(worker_state.active_requests),
        "task_events": settings.task_events,
        "metrics_port": settings.metrics_port,
        "pid": os.getpid(),
        "uptime_s": round(time.time() - _STARTED, 1),
    }


@inspect_command()
def agentq(state: Any, **_: Any) -> dict[str, Any]:
    """agentq's view of this worker: queues vs prefix, device, models on disk, tasks run."""
    settings: Settings = state.app.agentq_settings
    consumer = state.consumer.task_consumer
    consumed = [q.name for q in consumer.queues] if consumer else []
    return worker_info(settings, consumed)
