"""Bridge throughput on a pre-loaded backlog, in process, optionally under cProfile.

`python -m bench.bridge_profile --jobs 100000 [--profile]`: produces a digits backlog to a fresh
topic, then runs one Bridge (real Kafka, real ledger, real Celery publish to a private queue that
no worker reads) until every record is durable and committed; prints records/s and the top of
the profile. The private queue and the ledger rows are removed afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import redis
from sqlalchemy import text

from agentq.config import Settings
from agentq.log import configure_logging
from producers.cli import produce
from producers.synthetic import synthetic_jobs
from producers.topics import ensure_topics
from storage.db import make_engine


def isolated(settings: Settings, tag: str) -> Settings:
    kafka = replace(settings.kafka, jobs_topic=f"agentq.bench.{tag}",
                    dlq_topic=f"agentq.bench.{tag}.dlq", group_id=f"agentq-bench-{tag}")
    bridge = replace(settings.bridge, queue_high_watermark=10**9, queue_low_watermark=10**9 - 1,
                     max_inflight_jobs=10**9)  # no worker drains: never pause
    return replace(settings, kafka=kafka, bridge=bridge, queue_prefix=f"b{tag}.")


def run_bridge(settings: Settings, total: int, profile: bool, timeout_s: float) -> dict[str, Any]:
    from bridge.consumer import Bridge
    from workers.app import make_celery

    db = make_engine(settings.worker_database_url, pool_size=4, app_name="agentq-bench-bridge")
    bridge = Bridge(settings, db, make_celery(settings))
    stop = threading.Event()
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    first = None
    try:
        if prof:
            prof.enable()
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            bridge.step()
            if first is None and bridge.stats["received"]:
                first = time.perf_counter()
            if bridge.stats["received"] >= total and len(bridge.batcher) == 0:
                bridge.flush_all()
                bridge.commit(force=True)
                if bridge.tracker.pending_count() == 0:
                    break
        elapsed = time.perf_counter() - (first or t0)
        if prof:
            prof.disable()
    finally:
        stop.set()
        bridge.shutdown()
        db.dispose()
    out: dict[str, Any] = {"records": bridge.stats["received"], "elapsed_s": round(elapsed, 3),
                           "records_per_s": round(bridge.stats["received"] / elapsed, 1),
                           "batches": bridge.stats["batches"],
                           "avg_batch": round(bridge.stats["dispatched"]
                                              / max(1, bridge.stats["batches"]), 1)}
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(35)
        out["profile"] = s.getvalue()
    return out


def cleanup(settings: Settings) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    for q in ("cpu", "gpu"):
        r.delete(settings.queue_prefix + q)
    db = make_engine(settings.database_url, pool_size=1, app_name="agentq-bench-cleanup")
    with db.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE source_topic = :t"),
                     {"t": settings.kafka.jobs_topic})
    db.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.bridge_profile")
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--timeout-s", type=float, default=600)
    args = p.parse_args(argv)
    configure_logging("WARNING", False)
    settings = isolated(Settings.from_env(), uuid.uuid4().hex[:8])
    ensure_topics(settings.kafka)
    produced = produce(settings, synthetic_jobs("digits-mlp", args.jobs), args.jobs, quiet=True)
    try:
        res = run_bridge(settings, args.jobs, args.profile, args.timeout_s)
    finally:
        cleanup(settings)
    prof = res.pop("profile", None)
    print(json.dumps({"produce": produced, "bridge": res}))
    if prof:
        print(prof)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
