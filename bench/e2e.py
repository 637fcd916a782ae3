"""End-to-end benchmark (`agentq bench e2e`): ceiling vs the naive and celery-batches baselines vs
agentq, one run.

For each model (minilm-l6 only when registered):
- **ceiling**: raw ONNX Runtime (the registry's active cpu variant) on pre-tokenised batches in
  arrival order, padded to each batch's longest, with as many threads as the agentq worker pool;
- **naive**: one Celery task per job, PyTorch fp32, one INSERT per result (``bench.naive_tasks``),
  drained from a pre-loaded queue;
- **celery_batches**: the same jobs, one task message each, to a ``celery_batches.Batches`` task
  (flush every 256 or 50 ms), ONNX Runtime fp32, one COPY per flush (``bench.peers``), drained
  from a pre-loaded queue;
- **agentq**: Kafka → bridge → Celery → engine → Postgres, drained from a pre-loaded topic; then
  latency (produced → finished) at offered loads of 25/50/75% of the measured drain rate.

Writes ``bench/results/e2e.json``, ``e2e.png`` and ``e2e.md``. Throughput of the baselines and
agentq is measured from database timestamps (first to last result), so process start-up is not
counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, text

from agentq.config import Settings
from bench.e2e_report import merge, ratios, write_all
from bench.models_bench import cpu_session, registry_file
from bench.workload import console, drop_queues, isolated, make_jobs, progress, scalar, wait
from bridge.consumer import make_batcher
from ops.stack import Stack
from producers.cli import produce
from producers.contract import JobMessage
from producers.topics import ensure_topics
from storage.db import make_engine
from storage.registry import active_variant, registered_names

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = {"digits-mlp": 256, "minilm-l6": 64, "minilm-l6-fast": 64}  # bridge.consumer's
# A faster tier answers the same request as its exact model: its baselines are the exact model's
# (the naive worker runs minilm-l6 in PyTorch fp32), reused when measured earlier in the run.
BASELINE_OF = {"minilm-l6-fast": "minilm-l6"}


def cpu_model() -> str:
    """The CPU's model name (runs on different hosts differ most in what int8 gains)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gate_metrics(db: Engine, model: str) -> dict[str, Any]:
    """The active cpu variant's gate numbers from the registry (what the run's answers cost)."""
    with db.connect() as conn:
        row = active_variant(conn, model, "cpu")
    met = row.get("metrics") or {}
    keep = ("accuracy", "mean_cosine", "min_cosine", "retrieval_top1", "retrieval_top1_ref",
            "speedup_vs_fp32", "speedup_vs_exact_int8", "method")
    out = {"variant": row["variant"], "version": row["version"],
           **{k: met[k] for k in keep if k in met}}
    if isinstance(met.get("hard"), dict):
        out["hard"] = {k: met["hard"][k] for k in ("mean_cosine", "min_cosine") if k in met["hard"]}
    return out


# -- ceiling -----------------------------------------------------------------------------------
def ceiling(settings: Settings, db: Engine, model: str, jobs: list[JobMessage],
            threads: int) -> dict[str, Any]:
    with db.connect() as conn:
        row = active_variant(conn, model, "cpu")
    sess = cpu_session(registry_file(settings, row["path"]), threads)
    names = [i.name for i in sess.get_inputs()]
    b = BATCH[model]
    batches: list[dict[str, np.ndarray]] = []
    real = padded = 0
    if model == "digits-mlp":
        x = np.asarray([j.input["pixels"] for j in jobs], dtype=np.float32)
        batches = [{names[0]: x[i:i + b]} for i in range(0, len(x), b)]
    else:
        from models.tokenizer import TextTokenizer, package_model_dir

        tok = TextTokenizer.from_dir(package_model_dir())
        for i in progress(list(range(0, len(jobs), b)), f"ceiling {model}: tokenise", every=10):
            enc = tok.encode([j.input["text"] for j in jobs[i:i + b]])
            feeds = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
                     "token_type_ids": np.zeros_like(enc.input_ids)}
            batches.append({k: v for k, v in feeds.items() if k in names})
            real += int(enc.token_counts.sum())
            padded += enc.input_ids.size
    sess.run(None, batches[0])  # warm-up
    times = []
    t0 = time.perf_counter()
    for feeds in progress(batches, f"ceiling {model}: run", every=10):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    out = {"jobs": len(jobs), "elapsed_s": round(elapsed, 3),
           "jobs_per_s": round(len(jobs) / elapsed, 1), "batch": b, "threads": threads,
           "variant": row["variant"], "batch_ms_p50": round(1000 * float(np.median(times)), 3),
           "batch_ms_p95": round(1000 * float(np.percentile(times, 95)), 3)}
    if real:
        out["padding_ratio"] = round(padded / real, 3)
    return out


# -- naive baseline ----------------------------------------------------------------------------
def naive(settings: Settings, owner: Engine, model: str, jobs: list[JobMessage], workers: int,
          log_dir: Path, timeout_s: float) -> dict[str, Any]:
    from bench.naive_tasks import app as naive_app

    tag = uuid.uuid4().hex[:8]
    table, queue = f"bench_naive_{tag}", f"bench.naive.{tag}"
    with owner.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (job_id uuid PRIMARY KEY, model text, "
                          "label smallint, probs real[], embedding real[], "
                          "created_at timestamptz NOT NULL DEFAULT clock_timestamp())"))
    stack = Stack(env={"AGENTQ_NAIVE_TABLE": table, "AGENTQ_NAIVE_MODEL": model}, log_dir=log_dir)
    try:
        naive_app.conf.broker_url = settings.redis_url
        with naive_app.producer_or_acquire() as producer:  # pre-load the queue
            for j in progress(jobs, f"naive {model}: queue tasks"):
                naive_app.send_task("naive.infer", args=[j.job_id, model, j.input], queue=queue,
                                    producer=producer)
        stack.start("naive", [sys.executable, "-m", "celery", "-A", "bench.naive_tasks", "worker",
                              "-Q", queue, "-c", str(workers), "-P", "prefork",
                              "--without-gossip", "--without-mingle", "--without-heartbeat",
                              "-n", f"naive-{tag}@%h", "-l", "WARNING"], {"C_FORCE_ROOT": "1"})
        count_sql = text(f"SELECT count(*) FROM {table}")
        wait(lambda: scalar(owner, count_sql), len(jobs), f"naive {model}: drain", timeout_s,
              stack)
        with owner.connect() as conn:
            n, first, last = conn.execute(text(
                f"SELECT count(*), min(created_at), max(created_at) FROM {table}")).one()
    finally:
        stack.stop_all()
        import redis

        redis.Redis.from_url(settings.redis_url).delete(queue)
        with owner.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    span = max((last - first).total_seconds(), 1e-6)
    return {"jobs": n, "elapsed_s": round(span, 3), "jobs_per_s": round((n - 1) / span, 1),
            "workers": workers}


# -- agentq ------------------------------------------------------------------------------------
def _send(s: Settings, jobs: list[JobMessage], rate: float = 0.0) -> dict[str, Any]:
    return produce(s, iter(jobs), len(jobs), rate=rate)


def _terminal(db: Engine, ids: list[str]) -> int:
    return scalar(db, text("SELECT count(*) FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[])) "
                            "AND status IN ('succeeded','failed','rejected','expired')"),
                   {"ids": ids})


DRAIN_SQL = text("""
SELECT count(*) AS jobs, count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(DISTINCT batch_id) AS batches,
       extract(epoch FROM max(finished_at) - min(received_at)) AS span_s
FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))
""")

LATENCY_SQL = text("""
SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
         ORDER BY 1000 * extract(epoch FROM finished_at - produced_at)) AS pct,
       avg(1000 * extract(epoch FROM received_at - produced_at)) AS kafka_ms,
       avg(1000 * extract(epoch FROM queued_at - received_at)) AS batching_ms,
       avg(1000 * extract(epoch FROM started_at - queued_at)) AS in_queue_ms,
       avg(1000 * extract(epoch FROM finished_at - started_at)) AS run_ms,
       count(DISTINCT batch_id) AS batches, count(*) AS jobs
FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[])) AND status = 'succeeded'
""")

PADDING_SQL = text("""
SELECT sum(real_tokens) AS real, sum(longest * n) AS padded FROM (
  SELECT j.batch_id, count(*) AS n, sum((r.extra ->> 'tokens')::int) AS real_tokens,
         max((r.extra ->> 'tokens')::int) AS longest
  FROM jobs j JOIN results r USING (job_id)
  WHERE j.job_id = ANY(CAST(:ids AS uuid[])) AND r.extra ? 'tokens' GROUP BY j.batch_id) b
""")


def agentq(settings: Settings, db: Engine, model: str, jobs: list[JobMessage], workers: int,
           loads: list[float], load_s: float, log_dir: Path, timeout_s: float,
           seed: int) -> dict[str, Any]:
    s, env = isolated(settings, uuid.uuid4().hex[:8])
    ensure_topics(s.kafka)
    stack = Stack(env=env, log_dir=log_dir)
    out: dict[str, Any] = {}
    try:
        stack.worker(concurrency=workers)
        bridge = stack.bridge()
        warm = make_jobs(model, 200, seed + 1)  # warm: worker sessions, bridge, consumer group
        _send(s, warm)
        wait(lambda: _terminal(db, [j.job_id for j in warm]), len(warm),
              f"agentq {model}: warm-up", timeout_s, stack)
        bridge.stop()  # pre-load the backlog while no bridge reads it
        console.print(f"agentq {model}: pre-loading {len(jobs)} jobs")
        out["produce"] = _send(s, jobs)
        stack.bridge()
        ids = [j.job_id for j in jobs]
        wait(lambda: _terminal(db, ids), len(ids), f"agentq {model}: drain", timeout_s, stack)
        with db.connect() as conn:
            d = conn.execute(DRAIN_SQL, {"ids": ids}).one()
            pad = conn.execute(PADDING_SQL, {"ids": ids}).one()
        span = float(d.span_s)
        out["drain"] = {"jobs": d.jobs, "succeeded": d.succeeded, "elapsed_s": round(span, 3),
                        "jobs_per_s": round(d.jobs / span, 1), "batches": d.batches,
                        "avg_batch": round(d.jobs / max(1, d.batches), 1)}
        if pad.real:
            out["drain"]["padding_ratio"] = round(float(pad.padded) / float(pad.real), 3)
        capacity = out["drain"]["jobs_per_s"]
        out["latency"] = []
        for k, frac in enumerate(loads):
            rate = frac * capacity
            batch = make_jobs(model, max(50, int(rate * load_s)), seed + 10 + k)
            console.print(f"agentq {model}: offered load {frac:.0%} = {rate:.0f} jobs/s "
                          f"for {load_s:.0f} s")
            sent = _send(s, batch, rate=rate)
            bids = [j.job_id for j in batch]
            wait(lambda b=bids: _terminal(db, b), len(bids), f"agentq {model}: {frac:.0%}",
                  timeout_s, stack)
            with db.connect() as conn:
                lat = conn.execute(LATENCY_SQL, {"ids": bids}).one()
            p50, p95, p99 = (round(float(v), 1) for v in lat.pct)
            out["latency"].append({
                "load": frac, "target_jobs_per_s": round(rate, 1),
                "offered_jobs_per_s": sent["jobs_per_s"], "jobs": lat.jobs,
                "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                "kafka_ms": round(float(lat.kafka_ms), 1),
                "batching_ms": round(float(lat.batching_ms), 1),
                "in_queue_ms": round(float(lat.in_queue_ms), 1),
                "run_ms": round(float(lat.run_ms), 1),
                "avg_batch": round(lat.jobs / max(1, lat.batches), 1)})
    finally:
        stack.stop_all()
        drop_queues(s)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--digits", type=int, default=100_000, help="digits-mlp backlog for agentq")
    p.add_argument("--minilm", type=int, default=10_000, help="minilm-l6 backlog for agentq")
    p.add_argument("--naive-digits", type=int, default=20_000,
                   help="digits-mlp jobs for each baseline (naive, celery-batches)")
    p.add_argument("--naive-minilm", type=int, default=2_000)
    p.add_argument("--workers", type=int, default=2, help="worker processes (agentq, baselines)")
    p.add_argument("--loads", default="0.25,0.5,0.75")
    p.add_argument("--load-s", type=float, default=15.0, help="seconds per offered load")
    p.add_argument("--models", default="digits-mlp,minilm-l6,minilm-l6-fast")
    p.add_argument("--skip", default="",
                   help="comma list of phases: ceiling,naive,celery_batches,agentq")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--timeout-s", type=float, default=900)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge", nargs="+", type=Path, metavar="E2E_JSON",
                   help="only merge per-model results of earlier runs (later files win) and "
                        "write the report; each model keeps the run it was measured in")


def register(sub: Any) -> None:
    p = sub.add_parser("e2e", help="ceiling vs naive vs celery-batches vs agentq, drain and "
                       "latency at offered loads",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=command)


def main(argv: list[str] | None = None) -> int:
    from agentq.config import Settings

    p = argparse.ArgumentParser(prog="agentq bench e2e")
    add_arguments(p)
    return command(p.parse_args(argv), Settings.from_env())


def command(args: argparse.Namespace, settings: Any) -> int:
    if args.merge:
        return merge(args.merge, args.out)
    settings = Settings.from_env()
    skip = set(filter(None, args.skip.split(",")))
    loads = [float(x) for x in args.loads.split(",") if x]
    db = make_engine(settings.worker_database_url, pool_size=2, app_name="agentq-bench-e2e")
    owner = make_engine(settings.database_url, pool_size=1, app_name="agentq-bench-e2e")
    with db.connect() as conn:
        available = registered_names(conn)
    log_dir = Path(tempfile.mkdtemp(prefix="agentq-e2e-"))
    console.print(f"logs in {log_dir}")
    batcher = make_batcher(settings)
    res: dict[str, Any] = {"meta": {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": platform.platform(), "cpus": os.cpu_count(), "cpu_model": cpu_model(),
        "workers": args.workers, "max_wait_ms": settings.bridge.max_wait_ms,
        "max_batch": BATCH,  # the ceiling's arrival-order batches
        "bridge_max_batch": {m: batcher.limit(m) for m in BATCH},
        "loadavg_start": list(os.getloadavg()), "argv": sys.argv[1:]}, "models": {}}
    sizes = {"digits-mlp": (args.digits, args.naive_digits),
             "minilm-l6": (args.minilm, args.naive_minilm),
             "minilm-l6-fast": (args.minilm, args.naive_minilm)}
    try:
        for model in args.models.split(","):
            if model not in available:
                console.print(f"[yellow]{model} is not registered; skipped")
                res["models"][model] = {"skipped": "not registered", "ratios": {}}
                continue
            n_agentq, n_naive = sizes[model]
            jobs = make_jobs(model, n_agentq, args.seed)
            m: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                 "gate": gate_metrics(db, model)}
            if "ceiling" not in skip:
                console.print(f"{model}: ceiling")
                m["ceiling"] = ceiling(settings, db, model, jobs, args.workers)
            base = BASELINE_OF.get(model, model)
            earlier = res["models"].get(base, {}) if base != model else {}
            base_jobs = jobs[:n_naive] if base == model else make_jobs(base, n_naive, args.seed)
            for phase in ("naive", "celery_batches"):
                if phase in skip or not n_naive:
                    continue
                if phase in earlier:  # the exact model's, measured earlier in this run
                    m[phase] = dict(earlier[phase], baseline_of=base)
                elif phase == "naive":
                    m[phase] = naive(settings, owner, base, base_jobs, args.workers, log_dir,
                                     args.timeout_s)
                else:
                    from bench.peers import celery_batches_baseline

                    m[phase] = celery_batches_baseline(
                        settings, owner, base, base_jobs, args.workers, log_dir, args.timeout_s)
            if "agentq" not in skip:
                m["agentq"] = agentq(settings, db, model, jobs, args.workers, loads, args.load_s,
                                     log_dir, args.timeout_s, args.seed)
            m["ratios"] = ratios(m)
            res["models"][model] = m
            console.print_json(json.dumps(m))
    finally:
        db.dispose()
        owner.dispose()
    res["meta"]["loadavg_end"] = list(os.getloadavg())
    write_all(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
