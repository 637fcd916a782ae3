"""Apply a worker count to local Celery workers through remote control.

Only workers consuming this deployment's queues (``<prefix>cpu``/``<prefix>gpu``) are counted or
resized, so several deployments (or test runs) can share one Redis. ``pool_grow`` also raises the
consumer's prefetch count, so a prefork pool with ``worker_prefetch_multiplier=1`` really takes
more tasks (Celery's built-in ``--autoscale`` cannot grow under prefetch 1; remote control can).
A shrink only retires idle processes; when all are busy it is retried on the next tick.
"""

from __future__ import annotations

from typing import Any

from agentq.log import get_logger

log = get_logger("agentq.autoscale")


class CeleryPool:
    def __init__(self, app: Any, queues: list[str], timeout_s: float = 1.0) -> None:
        self.app = app
        self.queues = set(queues)
        self.timeout_s = timeout_s

    def workers(self) -> dict[str, int]:
        """Pool processes per worker node consuming our queues (empty when none answer)."""
        inspect = self.app.control.inspect(timeout=self.timeout_s)
        active = inspect.active_queues() or {}
        mine = sorted(h for h, qs in active.items()
                      if any(q.get("name") in self.queues for q in qs or []))
        if not mine:
            return {}
        stats = self.app.control.inspect(destination=mine, timeout=self.timeout_s).stats() or {}
        out = {}
        for host in mine:
            pool = (stats.get(host) or {}).get("pool") or {}
            procs = pool.get("processes")
            out[host] = len(procs) if isinstance(procs, list) else int(
                pool.get("max-concurrency") or 0)
        return out

    def resize(self, target: int, current: dict[str, int]) -> None:
        """Grow the smallest nodes / shrink the largest until the total is ``target``."""
        if not current:
            return
        sizes = dict(current)
        delta = target - sum(sizes.values())
        while delta != 0:
            if delta > 0:
                host = min(sizes, key=lambda h: (sizes[h], h))
                step = 1
            else:
                host = max(sizes, key=lambda h: (sizes[h], h))
                if sizes[host] <= 1:
                    break  # never shrink a node to zero processes
                step = -1
            sizes[host] += step
            delta -= step
        for host, n in sizes.items():
            diff = n - current[host]
            if diff == 0:
                continue
            cmd = self.app.control.pool_grow if diff > 0 else self.app.control.pool_shrink
            replies = cmd(abs(diff), destination=[host], reply=True, timeout=self.timeout_s)
            log.info("pool_resized", worker=host, by=diff, replies=_brief(replies))


def _brief(replies: Any) -> Any:
    try:
        return [v for r in replies or [] for v in r.values()]
    except Exception:
        return str(replies)[:200]
