"""Latency at one offered load under different knobs (issue 13, deliverable 4).

``python -m bench.latency_knobs --rate 4000 --configs default,no-busy,...`` starts, for each
configuration, a fresh bridge and worker pool on their own topic and queue, warms them, offers
``--rate`` digits jobs/s for ``--load-s`` seconds from this process (acks=all, lz4), and reads
from the ledger produced → finished percentiles and each stage's mean and p99: Kafka (produced →
received), batching (received → queued), Celery queue (queued → started), run (started →
finished). The machine's busy fraction over the load window comes from ``/proc/stat``, and the
producer's own CPU from this process's CPU time. Configurations run in the order given, repeated
``--rounds`` times interleaved (A B C A B C), so drift of the VM falls on every configuration.

Writes ``bench/results/latency-knobs.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from agentq.config import Settings
from bench.e2e import _send, _terminal, cpu_model
from bench.workload import console, drop_queues, isolated, make_jobs, wait
from ops.stack import Stack
from producers.topics import delete_topics, ensure_topics
from storage.db import make_engine

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (bridge env overrides, worker processes)
CONFIGS: dict[str, tuple[dict[str, str], int]] = {
    "default": ({}, 2),
    "no-busy": ({"AGENTQ_BRIDGE_BUSY_WAIT_MS": "0"}, 2),
    "busy-100": ({"AGENTQ_BRIDGE_BUSY_WAIT_MS": "100"}, 2),
    "busy-fresh": ({"AGENTQ_BRIDGE_BUSY_DEPTH_MAX_AGE_MS": "20"}, 2),
    "busy-100-fresh": ({"AGENTQ_BRIDGE_BUSY_WAIT_MS": "100",
                        "AGENTQ_BRIDGE_BUSY_DEPTH_MAX_AGE_MS": "20"}, 2),
    "poll-500": ({"AGENTQ_BRIDGE_POLL_MAX_RECORDS": "500"}, 2),
    "poll-500-wait-10": ({"AGENTQ_BRIDGE_POLL_MAX_RECORDS": "500",
                          "AGENTQ_BRIDGE_MAX_WAIT_MS": "10"}, 2),
    "busy-stale": ({"AGENTQ_BRIDGE_BUSY_DEPTH_MAX_AGE_MS": "250"}, 2),
    "wait-5-no-busy": ({"AGENTQ_BRIDGE_MAX_WAIT_MS": "5", "AGENTQ_BRIDGE_BUSY_WAIT_MS": "0"}, 2),
    "one-worker": ({}, 1),
    "one-worker-no-busy": ({"AGENTQ_BRIDGE_BUSY_WAIT_MS": "0"}, 1),
}

STAGES_SQL = text("""
WITH j AS (
  SELECT 1000 * extract(epoch FROM finished_at - produced_at) AS total,
         1000 * extract(epoch FROM received_at - produced_at) AS kafka,
         1000 * extract(epoch FROM queued_at - received_at) AS batching,
         1000 * extract(epoch FROM started_at - queued_at) AS in_queue,
         1000 * extract(epoch FROM finished_at - started_at) AS run, batch_id
  FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[])) AND status = 'succeeded')
SELECT count(*) AS jobs, count(DISTINCT batch_id) AS batches,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY total) AS total,
       avg(kafka) AS kafka_avg, percentile_cont(0.99) WITHIN GROUP (ORDER BY kafka) AS kafka_p99,
       avg(batching) AS batching_avg,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY batching) AS batching_p99,
       avg(in_queue) AS in_queue_avg,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY in_queue) AS in_queue_p99,
       avg(run) AS run_avg, percentile_cont(0.99) WITHIN GROUP (ORDER BY run) AS run_p99
FROM j
""")


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return sum(f) - idle, sum(f)


def one(settings: Settings, db: Any, name: str, rate: float, load_s: float, seed: int,
        log_dir: Path, timeout_s: float) -> dict[str, Any]:
    env_over, workers = CONFIGS[name]
    s, env = isolated(settings, uuid.uuid4().hex[:8])
    ensure_topics(s.kafka)
    stack = Stack(env={**env, **env_over}, log_dir=log_dir)
    try:
        stack.worker(concurrency=workers)
        stack.bridge()
        warm = make_jobs("digits-mlp", 500, seed + 1)
        _send(s, warm)
        wait(lambda: _terminal(db, [j.job_id for j in warm]), len(warm),
             f"{name}: warm-up", timeout_s, stack)
        jobs = make_jobs("digits-mlp", int(rate * load_s), seed + 2)
        console.print(f"{name}: offering {rate:.0f} jobs/s for {load_s:.0f} s")
        busy0, total0 = _cpu_ticks()
        cpu0, t0 = time.process_time(), time.monotonic()
        sent = _send(s, jobs, rate=rate)
        cpu1, t1 = time.process_time(), time.monotonic()
        busy1, total1 = _cpu_ticks()
        ids = [j.job_id for j in jobs]
        wait(lambda: _terminal(db, ids), len(ids), f"{name}: finish", timeout_s, stack)
        with db.connect() as conn:
            r = conn.execute(STAGES_SQL, {"ids": ids}).one()
    finally:
        stack.stop_all()
        drop_queues(s)
        try:
            delete_topics(s.kafka, [s.kafka.jobs_topic, s.kafka.dlq_topic])
        except Exception:  # best effort
            pass
    p50, p95, p99 = (round(float(v), 1) for v in r.total)
    return {
        "config": name, "env": env_over, "workers": workers, "jobs": r.jobs,
        "offered_jobs_per_s": sent["jobs_per_s"], "avg_batch": round(r.jobs / max(1, r.batches), 1),
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
        **{f"{st}_{k}_ms": round(float(getattr(r, f"{st}_{k}")), 1)
           for st in ("kafka", "batching", "in_queue", "run") for k in ("avg", "p99")},
        "machine_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
        "producer_us_per_job": round(1e6 * (cpu1 - cpu0) / max(1, len(jobs)), 1),
        "load_window_s": round(t1 - t0, 2),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per configuration: the median over rounds of each number."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["config"] for r in runs):
        mine = [r for r in runs if r["config"] == name]
        keys = [k for k, v in mine[0].items() if isinstance(v, (int, float))]
        out[name] = {k: sorted(r[k] for r in mine)[len(mine) // 2] for k in keys}
    return out


def write(res: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency-knobs.json").write_text(json.dumps(res, indent=2))
    m = res["meta"]
    lines = ["# Latency at one offered load, by knob", "",
             f"{m['when']} · {m['cpu_model']} · {m['cpus']} CPUs · digits-mlp offered "
             f"{m['rate']:.0f} jobs/s for {m['load_s']:.0f} s · {m['rounds']} round(s), medians · "
             f"load average {m['load_start']} at start, {m['load_end']} at end", "",
             "| config | workers | p50 ms | p95 ms | p99 ms | kafka avg/p99 | batching avg/p99 | "
             "queue avg/p99 | run avg/p99 | avg batch | machine busy | producer µs/job |",
             "|---|---:|---:|---:|---:|---|---|---|---|---:|---:|---:|"]
    for name, r in res["summary"].items():
        lines.append(
            f"| {name} | {r['workers']:.0f} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
            + " | ".join(f"{r[f'{st}_avg_ms']} / {r[f'{st}_p99_ms']}"
                         for st in ("kafka", "batching", "in_queue", "run"))
            + f" | {r['avg_batch']} | {r['machine_busy']:.0%} | {r['producer_us_per_job']} |")
    lines += ["", "Stages from the ledger's timestamps: kafka = produced → received by the "
              "bridge, batching = received → batch durable (queued), queue = queued → a worker "
              "started the batch, run = started → results and status written. Machine busy: "
              "all CPUs over the load window (/proc/stat), the producer included."]
    (out / "latency-knobs.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots need the bench extra
        return
    names = list(res["summary"])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bottom = [0.0] * len(names)
    for st in ("kafka", "batching", "in_queue", "run"):
        vals = [res["summary"][n][f"{st}_avg_ms"] for n in names]
        ax.bar(names, vals, bottom=bottom, label=f"{st} (mean)")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.plot(names, [res["summary"][n]["p99_ms"] for n in names], "kD", label="p99 total")
    ax.set_ylabel("ms, produced → finished")
    ax.set_title(f"digits-mlp at {m['rate']:.0f} jobs/s offered: stage means and p99")
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(out / "latency-knobs.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rate", type=float, default=4000.0, help="offered digits jobs/s")
    p.add_argument("--load-s", type=float, default=15.0)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--timeout-s", type=float, default=300)
    a = p.parse_args(argv)
    names = [n for n in a.configs.split(",") if n]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configs {sorted(unknown)}; known: {sorted(CONFIGS)}")
    settings = Settings.from_env()
    db = make_engine(settings.database_url, pool_size=2, app_name="agentq-bench-latency")
    meta = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "platform": platform.platform(), "cpus": os.cpu_count(), "cpu_model": cpu_model(),
            "rate": a.rate, "load_s": a.load_s, "rounds": a.rounds,
            "load_start": round(os.getloadavg()[0], 2)}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="agentq-latency-") as tmp:
        for rnd in range(a.rounds):
            for i, name in enumerate(names):
                r = one(settings, db, name, a.rate, a.load_s, 1000 * rnd + 10 * i,
                        Path(tmp), a.timeout_s)
                r["round"] = rnd
                runs.append(r)
                console.print(f"{name}: p50 {r['p50_ms']} p99 {r['p99_ms']} ms, "
                              f"machine busy {r['machine_busy']:.0%}")
    meta["load_end"] = round(os.getloadavg()[0], 2)
    db.dispose()
    write({"meta": meta, "runs": runs, "summary": summarise(runs)}, a.out)
    console.print((a.out / "latency-knobs.md").read_text(), markup=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
