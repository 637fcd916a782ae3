"""Part 3 of `agentq bench shm`: end to end (Kafka -> bridge -> Celery worker -> engine ->
Postgres), in-process sessions vs the shared engine, interleaved drains; and the helpers the
worker-path part shares with it."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# ---- 3. end to end: Kafka -> bridge -> Celery worker -> engine -> Postgres --------------------
DRAIN_SQL = """
SELECT count(*) AS jobs, count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(DISTINCT batch_id) AS batches,
       extract(epoch FROM max(finished_at) - min(received_at)) AS span_s
FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))
"""


TERMINAL_SQL = """
SELECT count(*) FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))
   AND status IN ('succeeded','failed','rejected','expired')
"""


def bridge_batch(model: str) -> int:
    """The batch size the bridge dispatches for ``model`` under a backlog (bridge.consumer)."""
    from agentq.config import Settings
    from models.catalog import CATALOG

    b = Settings.from_env().bridge
    return b.max_batch * b.batch_scale.get(model, CATALOG[model].batch_scale)


def _order(r: int, modes: tuple[str, ...]) -> tuple[str, ...]:
    return modes if r % 2 == 0 else tuple(reversed(modes))


def summarize(got: dict[str, list[float]]) -> dict[str, Any]:
    """Medians per mode, their ratio, and the median of per-repetition ratios (each pair ran back
    to back, so a paired ratio cancels slow drifts of the background load)."""
    med = {m: round(float(np.median(v)), 1) for m, v in got.items()}
    paired = [s / i for s, i in zip(got["shared"], got["inprocess"], strict=True) if i]
    return {"median_jobs_s": med,
            "shared_over_inprocess": round(med["shared"] / med["inprocess"], 3),
            "paired_ratios": [round(x, 3) for x in paired],
            "paired_ratio_median": round(float(np.median(paired)), 3)}


def _drain_once(mode: str, model: str, n_jobs: int, workers: int, seed: int, log_dir: Path,
                timeout_s: float) -> dict[str, Any]:
    """One drain: a fresh topic and queue, a Celery worker in ``mode`` and a bridge; warm up,
    pre-load ``n_jobs`` while no bridge reads, start the bridge, time received → finished."""
    from dataclasses import replace

    from sqlalchemy import text

    from agentq.config import Settings
    from bench.workload import drop_queues
    from ops.stack import Stack
    from producers.cli import produce
    from producers.synthetic import synthetic_jobs
    from producers.topics import ensure_topics
    from storage.db import make_engine

    base = Settings.from_env()
    tag = f"shm{mode[:2]}{os.getpid()}x{seed}x{time.monotonic_ns() % 10**6}"
    kafka = replace(base.kafka, jobs_topic=f"agentq.bench.{tag}",
                    dlq_topic=f"agentq.bench.{tag}.dlq", group_id=f"agentq-bench-{tag}")
    s = replace(base, kafka=kafka, queue_prefix=f"b{tag}.")
    env = {"AGENTQ_KAFKA_JOBS_TOPIC": kafka.jobs_topic, "AGENTQ_KAFKA_DLQ_TOPIC": kafka.dlq_topic,
           "AGENTQ_KAFKA_GROUP_ID": kafka.group_id, "AGENTQ_QUEUE_PREFIX": s.queue_prefix,
           "AGENTQ_LOG_LEVEL": "WARNING", "AGENTQ_WORKER_ENGINE_MODE": mode}
    ensure_topics(s.kafka)
    db = make_engine(s.worker_database_url, pool_size=1, app_name="agentq-bench-shm")
    stack = Stack(env=env, log_dir=log_dir)

    def wait(ids: list[str], what: str, limit_s: float = timeout_s) -> None:
        end = time.monotonic() + limit_s
        while True:
            with db.connect() as conn:
                done = conn.execute(text(TERMINAL_SQL), {"ids": ids}).scalar_one()
            if done >= len(ids):
                return
            if time.monotonic() > end:
                raise TimeoutError(f"{what}: {done}/{len(ids)} after {limit_s:.0f}s\n"
                                   + stack.logs())
            time.sleep(0.25)

    try:
        stack.worker(concurrency=workers)
        bridge = stack.bridge()
        warm = list(synthetic_jobs(model, 4 * bridge_batch(model), seed=seed + 10_000))
        produce(s, iter(warm), len(warm), quiet=True)
        try:
            wait([j.job_id for j in warm], f"{model} {mode} warm-up", 90)
        except TimeoutError:  # seen once: a bridge that started before the new topic's metadata
            bridge.stop()     # was visible logged "No partition metadata" and never consumed
            bridge = stack.bridge()
            wait([j.job_id for j in warm], f"{model} {mode} warm-up (second bridge)")
        bridge.stop()
        jobs = list(synthetic_jobs(model, n_jobs, seed=seed))
        produce(s, iter(jobs), len(jobs), quiet=True)
        load0 = os.getloadavg()[0]
        stack.bridge()
        ids = [j.job_id for j in jobs]
        wait(ids, f"{model} {mode} drain")
        with db.connect() as conn:
            d = conn.execute(text(DRAIN_SQL), {"ids": ids}).one()
        span = float(d.span_s)
        return {"jobs": d.jobs, "succeeded": d.succeeded, "elapsed_s": round(span, 3),
                "jobs_per_s": round(d.jobs / span, 1),
                "avg_batch": round(d.jobs / max(1, d.batches), 1),
                "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    finally:
        stack.stop_all()
        db.dispose()
        drop_queues(s)


def end_to_end(models: list[str], jobs: dict[str, int], workers: int, reps: int,
               timeout_s: float, progress: Any) -> dict[str, Any]:
    """The whole pipeline per model, engine mode alternating run by run (ABBA), medians."""
    log_dir = Path(tempfile.mkdtemp(prefix="agentq-bench-shm-"))
    results: dict[str, Any] = {}
    for model in models:
        runs: dict[str, list[dict[str, Any]]] = {"inprocess": [], "shared": []}
        for r in range(reps):
            for mode in _order(r, ("inprocess", "shared")):
                res = _drain_once(mode, model, jobs[model], workers, seed=100 * r + 7,
                                  log_dir=log_dir, timeout_s=timeout_s)
                runs[mode].append(res)
                progress(f"end to end {model} {mode} rep {r + 1}: {res['jobs_per_s']:,.0f} "
                         f"jobs/s (avg batch {res['avg_batch']}, load {res['load_avg_1m']})")
        assert all(x["succeeded"] == x["jobs"] for v in runs.values() for x in v), runs
        results[model] = {"jobs": jobs[model], "workers": workers, "bridge_batch":
                          bridge_batch(model), "runs": runs,
                          **summarize({m: [x["jobs_per_s"] for x in v]
                                       for m, v in runs.items()})}
    return results


def _registered(names: list[str]) -> list[str]:
    from agentq.config import Settings
    from storage.db import make_engine
    from storage.registry import registered_names

    s = Settings.from_env()
    eng = make_engine(s.worker_database_url, pool_size=1, app_name="bench")
    try:
        with eng.connect() as conn:
            have = registered_names(conn)
    finally:
        eng.dispose()
    return [n for n in names if n in have]
