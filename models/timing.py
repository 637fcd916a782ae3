"""Build-time speed measurement that survives a busy machine (no torch here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_times_ms(calls: dict[str, Callable[[], Any]], rounds: int = 7,
                  warmup: int = 2) -> dict[str, float]:
    """Best milliseconds per call for each candidate, timed in alternating rounds.

    Alternating the candidates inside each round exposes them all to the same background load,
    and the minimum over rounds is the least disturbed estimate of each one's own cost.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    best = {name: float("inf") for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            best[name] = min(best[name], (time.perf_counter() - t0) * 1000)
    return best


def pick_active(cost: dict[str, float], baseline: str = "fp32", margin: float = 0.10) -> str:
    """The cheapest variant, but the exact ``baseline`` unless another beats it by ``margin``."""
    best = min(cost, key=lambda v: cost[v])
    return best if cost[best] < cost[baseline] * (1 - margin) else baseline
