"""The scaling policy, table-driven: one observation and prior state in, one decision out."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from ops.autoscaler import (
    Decision,
    Observation,
    PartitionLag,
    ScalerState,
    ScaleUp,
    ScalingConfig,
    backlog_seconds,
    decide,
)

T = 1_000.0  # "now" in every table row
CFG = ScalingConfig(min_workers=1, max_workers=8, target_drain_s=30, scale_down_window_s=60,
                    gain_settle_s=10, min_gain_fraction=0.25, saturation_hold_s=120,
                    assumed_per_worker_jobs_s=50, max_partitions=4, bridge_jobs_s=200)
OLD = ScalerState(started_s=0.0)  # a scaler that has been running for a long time


def parts(*lags: int, committed: bool = True) -> tuple[PartitionLag, ...]:
    return tuple(PartitionLag(i, end_offset=1_000 + lag, committed=1_000 if committed else None,
                              start_offset=1_000 if not committed else 0)
                 for i, lag in enumerate(lags))


CASES = [
    # id, observation, prior state, expected (workers, bridges, reason)
    ("steady_state_holds",
     Observation(T, parts(3, 2, 0, 4), throughput_jobs_s=100, per_worker_jobs_s=50,
                 arrival_jobs_s=100, current_workers=2),
     OLD, (2, 1, "steady")),
    ("burst_scales_up_in_one_step_to_max",
     Observation(T, parts(2_500, 2_500, 2_500, 2_500), throughput_jobs_s=50,
                 per_worker_jobs_s=50, arrival_jobs_s=500, current_workers=1),
     OLD, (8, 4, "scale_up")),
    ("burst_counts_jobs_waiting_in_celery",
     Observation(T, parts(0, 0, 0, 0), queue_depth=50, avg_batch_size=60,
                 throughput_jobs_s=50, per_worker_jobs_s=50, arrival_jobs_s=0,
                 current_workers=1),
     OLD, (2, 1, "scale_up")),
    ("drain_within_window_keeps_workers",
     Observation(T, parts(750, 750, 750, 750), throughput_jobs_s=400, per_worker_jobs_s=50,
                 arrival_jobs_s=0, current_workers=8),
     replace(OLD, history=((T - 10, 8, 4),)), (8, 4, "stabilizing")),
    ("drain_after_window_scales_down_to_window_max",
     Observation(T, parts(750, 750, 750, 750), throughput_jobs_s=400, per_worker_jobs_s=50,
                 arrival_jobs_s=0, current_workers=8),
     replace(OLD, history=((T - 61, 8, 4), (T - 30, 3, 1))), (3, 1, "scale_down")),
    ("idle_after_window_goes_to_min",
     Observation(T, parts(0, 0, 0, 0), current_workers=3),
     replace(OLD, history=((T - 70, 3, 1),)), (1, 1, "scale_down")),
    ("idle_right_after_start_does_not_shrink",
     Observation(T, parts(0, 0, 0, 0), current_workers=3),
     ScalerState(), (3, 1, "stabilizing")),
    ("single_hot_partition_gets_one_bridge",
     Observation(T, parts(6_000, 0, 0, 0), throughput_jobs_s=50, per_worker_jobs_s=50,
                 arrival_jobs_s=300, current_workers=1),
     OLD, (8, 1, "scale_up")),
    ("no_committed_offset_yet_counts_from_first_offset",
     Observation(T, parts(4_500, 4_500, 0, 0, committed=False), throughput_jobs_s=0,
                 current_workers=1),
     OLD, (6, 2, "scale_up")),
    ("scale_up_with_no_gain_is_capped",
     Observation(T, parts(5_000, 5_000, 5_000, 5_000), throughput_jobs_s=105,
                 per_worker_jobs_s=26, arrival_jobs_s=400, current_workers=4),
     replace(OLD, pending_up=ScaleUp(T - 15, 2, 4, throughput_before=100,
                                     per_worker_before=50)),
     (4, 4, "saturated")),
    ("scale_up_with_gain_may_grow_again",
     Observation(T, parts(5_000, 5_000, 5_000, 5_000), throughput_jobs_s=190,
                 per_worker_jobs_s=47, arrival_jobs_s=400, current_workers=4),
     replace(OLD, pending_up=ScaleUp(T - 15, 2, 4, throughput_before=100,
                                     per_worker_before=50)),
     (8, 4, "scale_up")),
    ("scale_up_still_settling_waits",
     Observation(T, parts(5_000, 5_000, 5_000, 5_000), throughput_jobs_s=100,
                 per_worker_jobs_s=50, arrival_jobs_s=400, current_workers=4),
     replace(OLD, pending_up=ScaleUp(T - 3, 2, 4, throughput_before=100,
                                     per_worker_before=50)),
     (4, 4, "settling")),
    ("saturation_cap_expires",
     Observation(T, parts(5_000, 5_000, 5_000, 5_000), throughput_jobs_s=105,
                 per_worker_jobs_s=26, arrival_jobs_s=400, current_workers=4),
     replace(OLD, ceiling=4, ceiling_until_s=T - 1), (8, 4, "scale_up")),
    ("min_workers_floor_when_idle",
     Observation(T, parts(0, 0, 0, 0), current_workers=0),
     OLD, (1, 1, "scale_up")),
]


@pytest.mark.parametrize("obs,state,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_scaling_table(obs: Observation, state: ScalerState, expected: tuple[int, int, str]):
    d = decide(obs, state, CFG)
    assert (d.workers, d.bridges, d.reason) == expected, d


def test_backlog_is_measured_in_seconds_of_drain():
    d = decide(Observation(T, parts(500, 500), throughput_jobs_s=100, current_workers=2),
               OLD, CFG)
    assert d.backlog_jobs == 1_000 and d.backlog_s == pytest.approx(10.0)
    assert backlog_seconds(10, 0) == math.inf
    assert backlog_seconds(0, 0) == 0.0


def test_no_gain_cap_persists_on_following_ticks():
    # Given a scale-up judged as bringing nothing,
    obs = Observation(T, parts(5_000, 5_000), throughput_jobs_s=105, per_worker_jobs_s=26,
                      arrival_jobs_s=400, current_workers=4)
    st = replace(OLD, pending_up=ScaleUp(T - 15, 2, 4, 100, 50))
    d = decide(obs, st, CFG)
    # when the backlog is still large a few ticks later, then the pool does not grow.
    for k in range(1, 5):
        d = decide(replace(obs, now_s=T + k), d.state, CFG)
        assert d.workers == 4 and d.reason == "saturated"
    assert d.state.last_gain == pytest.approx(5.0)


def test_partition_without_commit_uses_earliest_offset():
    p = PartitionLag(0, end_offset=900, committed=None, start_offset=100)
    assert p.lag == 800
    assert PartitionLag(0, end_offset=900, committed=50, start_offset=100).lag == 800
    assert PartitionLag(0, end_offset=900, committed=900).lag == 0


def _simulate(arrivals: list[float], per_worker: float, cfg: ScalingConfig,
              noise: float = 0.0, seed: int = 1) -> list[Decision]:
    """A toy world: each worker drains ``per_worker`` jobs/s; one tick per second."""
    rng = random.Random(seed)
    workers, backlog, st = cfg.min_workers, 0.0, ScalerState()
    out = []
    for t, a in enumerate(arrivals):
        backlog += a
        done = min(backlog, workers * per_worker)
        backlog -= done
        measured = done * (1 + rng.uniform(-noise, noise))
        d = decide(Observation(float(t), (PartitionLag(0, int(backlog), 0),),
                               throughput_jobs_s=measured, per_worker_jobs_s=per_worker,
                               arrival_jobs_s=a, current_workers=workers), st, cfg)
        workers, st = d.workers, d.state
        out.append(d)
    return out


def _direction_changes(ds: list[Decision]) -> int:
    moves = [b.workers - a.workers for a, b in zip(ds, ds[1:], strict=False)
             if b.workers != a.workers]
    turns = sum(1 for x, y in zip(moves, moves[1:], strict=False) if (x > 0) != (y > 0))
    return turns + (1 if moves else 0)


def test_burst_then_idle_scales_up_once_and_down_once():
    cfg = replace(CFG, max_workers=4, scale_down_window_s=20, target_drain_s=10)
    # Given 400 jobs/s for 20 s against workers that do 100 jobs/s each, then silence,
    ds = _simulate([400.0] * 20 + [0.0] * 80, per_worker=100, cfg=cfg)
    workers = [d.workers for d in ds]
    # then the pool reaches the max, comes back to the min, and turns at most twice.
    assert max(workers) == 4 and workers[-1] == 1
    assert _direction_changes(ds) <= 2
    assert workers.index(4) < 5  # fast up


def test_noisy_steady_load_does_not_flap():
    cfg = replace(CFG, scale_down_window_s=30)
    ds = _simulate([145.0] * 200, per_worker=50, cfg=cfg, noise=0.3, seed=7)
    after_warmup = ds[20:]
    changes = sum(1 for a, b in zip(after_warmup, after_warmup[1:], strict=False)
                  if a.workers != b.workers)
    assert changes <= 2
