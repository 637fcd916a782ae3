"""`agentq autoscale`: each tick read lag, queue depth and throughput, decide, apply, export.

The decision (``ops.autoscaler.decide``) is always exported as Prometheus gauges
(``agentq_desired_workers``, ``agentq_desired_bridge_replicas``) for HPA/KEDA; with ``--apply``
(default) it is also applied to the local Celery workers of this deployment's queues through
remote control. ``--trace FILE`` appends one JSON line per tick (benchmarks and tests read it).

Flags override ``AGENTQ_AUTOSCALE_<FIELD>`` env vars, which override ``ScalingConfig`` defaults.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from agentq import metrics
from agentq.config import ScalingConfig, Settings
from agentq.log import get_logger
from agentq.shutdown import stop_on_signals
from ops.autoscaler import Decision, Observation, ScalerState, decide
from storage.db import make_engine
from workers.queues import queue_names

log = get_logger("agentq.autoscale")


def config_from(args: argparse.Namespace, base: ScalingConfig) -> ScalingConfig:
    """Flags over ``base`` (the settings: defaults < AGENTQ_AUTOSCALE_* variables)."""
    changes: dict[str, Any] = {}
    for f in fields(base):
        raw = getattr(args, f.name, None)
        if raw is not None:
            changes[f.name] = type(getattr(base, f.name))(raw)
    return replace(base, **changes)


def register(sub: Any) -> None:
    p = sub.add_parser("autoscale", help="lag-driven autoscaler", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=command)


def add_arguments(p: argparse.ArgumentParser) -> None:
    for f in fields(ScalingConfig):
        if f.name == "max_partitions":
            continue  # read from the topic
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name,
                       type=type(f.default), default=None,
                       help=f"default {f.default}")
    p.add_argument("--interval-s", type=float, default=2.0, help="seconds between ticks")
    p.add_argument("--window-s", type=float, default=10.0, help="throughput window")
    p.add_argument("--no-apply", dest="apply", action="store_false",
                   help="only export the decision, do not resize local workers")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus port (default AGENTQ_METRICS_PORT; 0 = off)")
    p.add_argument("--trace", type=Path, help="append one JSON line per tick to this file")
    p.add_argument("--ticks", type=int, default=0, help="stop after N ticks (0 = run forever)")


class Autoscaler:
    """One tick = observe → decide → apply → export. Built once; clients live inside."""

    def __init__(self, settings: Settings, cfg: ScalingConfig, window_s: float = 10.0,
                 apply: bool = True, trace: Path | None = None) -> None:
        from ops.lag import Observer
        from ops.pool import CeleryPool
        from workers.app import make_celery

        self.s = settings
        self.cfg = cfg
        self.apply = apply
        self.trace = trace
        self.db = make_engine(settings.worker_database_url, pool_size=1,
                              app_name="agentq-autoscale")
        self.observer = Observer(settings, self.db, window_s)
        self.pool = CeleryPool(make_celery(settings), queue_names(settings.queue_prefix))
        self.state = ScalerState()
        self.per_worker: float | None = None  # EWMA of jobs/s per busy worker process
        self.applied: tuple[int, float] | None = None  # (target, when) of the last resize
        self.last_actual = 0
        self.grace_s = 10.0  # new pool processes take a moment to appear in stats
        self.t0 = time.monotonic()

    def tick(self) -> Decision:
        obs = self.observer.read()
        nodes = self.pool.workers()
        actual = sum(nodes.values())
        now = time.monotonic() - self.t0
        if not nodes and self.last_actual:
            actual = self.last_actual  # no reply this tick: do not read it as "no workers"
        self.last_actual = actual
        current = actual
        if self.applied is not None and now - self.applied[1] < self.grace_s:
            current = self.applied[0]  # a resize in progress counts as done
        thr = obs["throughput_jobs_s"]
        if actual and thr > 0 and obs["queue_depth"] > 0:  # busy: a per-worker measurement
            sample = thr / actual
            self.per_worker = sample if self.per_worker is None else \
                0.7 * self.per_worker + 0.3 * sample
        parts = obs["partitions"]
        cfg = replace(self.cfg, max_partitions=max(1, len(parts)))
        d = decide(Observation(now, parts, obs["queue_depth"], obs["avg_batch_size"], thr,
                               self.per_worker, obs["arrival_jobs_s"], current), self.state, cfg)
        self.state = d.state
        if self.apply and nodes and d.workers != current:
            try:
                self.pool.resize(d.workers, nodes)
                self.applied = (d.workers, now)
            except Exception as e:  # the next tick reconciles again
                log.warning("resize_failed", error=str(e)[:200])
        lags = {p.partition: p.lag for p in parts}
        metrics.autoscaler_state(self.s.kafka.jobs_topic, lags, d.workers, actual, d.bridges,
                                 d.backlog_s, obs["queue_depth"])
        row = {"t": round(now, 2), "wall": time.time(), "lag": sum(lags.values()),
               "lag_by_partition": lags, "queue_depth": obs["queue_depth"],
               "arrival_jobs_s": obs["arrival_jobs_s"], "throughput_jobs_s": round(thr, 2),
               "per_worker_jobs_s": self.per_worker, "actual_workers": actual,
               "desired_workers": d.workers, "desired_bridges": d.bridges, "reason": d.reason,
               "backlog_s": None if d.backlog_s == float("inf") else round(d.backlog_s, 2),
               "recommended_workers": d.recommended_workers}
        log.info("autoscale_tick", **{k: v for k, v in row.items() if k != "lag_by_partition"})
        if self.trace is not None:
            with self.trace.open("a") as f:
                f.write(json.dumps(row) + "\n")
        return d

    def close(self) -> None:
        self.observer.close()
        self.db.dispose()


def command(args: argparse.Namespace, settings: Settings) -> int:
    cfg = config_from(args, settings.autoscale)
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    metrics.start_server(port, role="autoscaler")
    stop = stop_on_signals()
    scaler = Autoscaler(settings, cfg, args.window_s, args.apply, args.trace)
    log.info("autoscaler_started", topic=settings.kafka.jobs_topic, min=cfg.min_workers,
             max=cfg.max_workers, target_drain_s=cfg.target_drain_s, apply=args.apply)
    n = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                scaler.tick()
            except Exception as e:  # a service blip must not end the loop
                log.warning("autoscale_tick_failed", error=str(e)[:300])
            n += 1
            if args.ticks and n >= args.ticks:
                break
            stop.wait(max(0.0, args.interval_s - (time.monotonic() - started)))
    finally:
        scaler.close()
    return 0
