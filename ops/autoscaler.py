"""The scaling policy: a pure function from what was observed to how many workers and bridges.

Backlog is measured in *seconds* (jobs waiting ÷ measured drain rate), not items, and every rule
works on rates:

* **required rate** = arrival rate + backlog ÷ ``target_drain_s`` — enough to keep up *and* drain
  what is waiting within the target time; desired workers = required ÷ per-worker rate (with a
  small tolerance so a steady state on a boundary does not round up).
* **scale up fast**: straight to the desired count in one step, bounded by ``max_workers``.
* **scale down slowly**: the count applied is the *highest* recommendation seen during the last
  ``scale_down_window_s`` (the Kubernetes HPA stabilisation rule), so a dip never flaps.
* **no blind scale-up**: a scale-up is judged ``gain_settle_s`` later; while it is being judged
  nothing grows, and when throughput rose by less than ``min_gain_fraction`` of what the new
  workers should have added (the bottleneck is downstream: Postgres, Redis, the CPU), the count
  is capped where it is for ``saturation_hold_s``.
* **bridges** ≤ partitions that have lag (a bridge without a lagging partition has nothing to do),
  ≤ partitions of the topic, ≥ ``min_bridges``.

A partition with no committed offset yet is lagging from its first offset (the bridge reads it
from the beginning: ``auto_offset_reset=earliest``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from agentq.config import ScalingConfig


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    end_offset: int
    committed: int | None  # None: the group has never committed on this partition
    start_offset: int = 0  # first offset still on the log (earliest)

    @property
    def lag(self) -> int:
        pos = self.start_offset if self.committed is None else max(self.committed,
                                                                   self.start_offset)
        return max(0, self.end_offset - pos)


@dataclass(frozen=True)
class Observation:
    now_s: float
    partitions: Sequence[PartitionLag] = ()
    queue_depth: int = 0  # batches waiting in the Celery queues
    avg_batch_size: float = 1.0  # jobs per queued batch
    throughput_jobs_s: float = 0.0  # jobs reaching a terminal state per second, measured
    per_worker_jobs_s: float | None = None  # measured while workers were busy; None: unknown
    arrival_jobs_s: float | None = None  # produce rate; None: assume it equals throughput
    current_workers: int = 1


@dataclass(frozen=True)
class ScaleUp:
    """A scale-up waiting to be judged by the throughput it brings."""

    at_s: float
    from_workers: int
    to_workers: int
    throughput_before: float
    per_worker_before: float


@dataclass(frozen=True)
class ScalerState:
    history: tuple[tuple[float, int, int], ...] = ()  # (time, workers, bridges) recommended
    pending_up: ScaleUp | None = None
    ceiling: int | None = None  # saturation cap on workers
    ceiling_until_s: float = 0.0
    last_gain: float | None = None  # jobs/s the last judged scale-up brought
    started_s: float | None = None  # first tick: no scale-down before a full window observed


@dataclass(frozen=True)
class Decision:
    workers: int
    bridges: int
    reason: str  # steady | scale_up | scale_down | stabilizing | settling | saturated
    backlog_jobs: int
    backlog_s: float
    required_jobs_s: float
    recommended_workers: int
    state: ScalerState = field(repr=False, default_factory=ScalerState)


def backlog_jobs(partitions: Sequence[PartitionLag], queue_depth: int = 0,
                 avg_batch_size: float = 1.0) -> int:
    return sum(p.lag for p in partitions) + int(round(queue_depth * avg_batch_size))


def backlog_seconds(jobs: float, drain_jobs_s: float) -> float:
    """Seconds to drain ``jobs`` at the measured rate; infinite when jobs wait and none drain."""
    if jobs <= 0:
        return 0.0
    if drain_jobs_s <= 0:
        return math.inf
    return jobs / drain_jobs_s


def _clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, n))


def decide(obs: Observation, state: ScalerState, cfg: ScalingConfig) -> Decision:
    """One tick of the policy: the desired worker and bridge counts, and the next state."""
    now = obs.now_s
    current = max(0, obs.current_workers)
    backlog = backlog_jobs(obs.partitions, obs.queue_depth, obs.avg_batch_size)
    drain = max(0.0, obs.throughput_jobs_s)
    arrival = drain if obs.arrival_jobs_s is None else max(0.0, obs.arrival_jobs_s)
    per_worker = obs.per_worker_jobs_s or cfg.assumed_per_worker_jobs_s
    required = arrival + backlog / cfg.target_drain_s
    raw = math.ceil(max(0.0, required / per_worker - cfg.tolerance)) if required > 0 else 0
    recommended = _clamp(raw, cfg.min_workers, cfg.max_workers)

    lagging = sum(1 for p in obs.partitions if p.lag > 0)
    bridge_cap = max(cfg.min_bridges, min(lagging, cfg.max_partitions))
    bridges_rec = _clamp(math.ceil(required / cfg.bridge_jobs_s), cfg.min_bridges, bridge_cap)

    # Judge the last scale-up once it had time to show its effect.
    pending, ceiling, until, gain = state.pending_up, state.ceiling, state.ceiling_until_s, \
        state.last_gain
    if ceiling is not None and now >= until:
        ceiling = None
    settling = False
    if pending is not None:
        if backlog == 0:
            pending = None  # drained: the scale-up did its job
        elif now - pending.at_s >= cfg.gain_settle_s:
            gain = drain - pending.throughput_before
            expected = (pending.to_workers - pending.from_workers) * pending.per_worker_before
            if gain < cfg.min_gain_fraction * expected:
                ceiling, until = max(cfg.min_workers, current), now + cfg.saturation_hold_s
            pending = None
        else:
            settling = True

    # Stabilise downwards: apply the highest recommendation of the window.
    history = tuple(h for h in state.history if now - h[0] < cfg.scale_down_window_s)
    history += ((now, recommended, bridges_rec),)
    started = now if state.started_s is None else state.started_s
    stable_workers = max(h[1] for h in history)
    if now - started < cfg.scale_down_window_s:
        stable_workers = max(stable_workers, current)  # not observed long enough to shrink
    bridges = min(max(h[2] for h in history), bridge_cap)

    if recommended > current:
        target, reason = recommended, "scale_up"
        if settling:
            target, reason = current, "settling"
        elif ceiling is not None and recommended > ceiling:
            target = max(current, ceiling)
            reason = "saturated" if target == current else "scale_up"
    elif recommended < current:
        target = min(current, stable_workers)
        reason = "scale_down" if target < current else "stabilizing"
    else:
        target, reason = current, "steady"
    target = _clamp(target, cfg.min_workers, cfg.max_workers)

    if target > current:
        pending = ScaleUp(now, current, target, drain,
                          obs.per_worker_jobs_s or (drain / current if current and drain
                                                    else cfg.assumed_per_worker_jobs_s))
    new_state = replace(state, history=history, pending_up=pending, ceiling=ceiling,
                        ceiling_until_s=until, last_gain=gain, started_s=started)
    return Decision(workers=target, bridges=bridges, reason=reason, backlog_jobs=backlog,
                    backlog_s=backlog_seconds(backlog, drain), required_jobs_s=required,
                    recommended_workers=recommended, state=new_state)
