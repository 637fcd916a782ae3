"""Round-trip benchmark (`agentq bench roundtrip`): submit → result in hand, as an agent sees it.

Starts a worker pool and a bridge with its reply relay (``--relay``: ``process``, the default,
a child process the bridge supervises; ``thread``, a thread inside the bridge; ``standalone``,
an ``agentq relay`` beside a bridge without one), then for each offered load submits jobs
through one ``JobClient`` at a steady rate and records, per job, when it was submitted and when
its reply resolved the handle. Next to that it reads the ledger: produced → finished (what
``agentq bench e2e`` reports), finished → reply sent (the relay), and so the reply path's own
cost: round trip minus produced → finished. Loads are jobs/s (``--rates``) or fractions of a
capacity (``--loads`` × ``--capacity``). The default capacity is measured in the same run, on the
same stack, before the loads: a backlog of ``--drain-jobs`` is produced while no bridge reads it,
then drained, and the drain rate (received → finished, as ``agentq bench e2e`` reports it) is the
100% the loads are fractions of. ``--capacity e2e`` takes the rates in ``bench/results/e2e.json``
instead, ``--capacity model=jobs/s,…`` fixed ones.

Writes ``bench/results/roundtrip.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from sqlalchemy import text

from agentq.config import Settings
from bench.workload import isolated, make_jobs, scalar, wait
from ops.stack import Stack
from producers.client import JobClient
from producers.topics import delete_topics, ensure_topics
from storage.db import make_engine
from storage.registry import registered_names

RESULTS = Path(__file__).resolve().parent / "results"
console = Console(stderr=True)

LEDGER_SQL = text("""
SELECT j.job_id::text, extract(epoch FROM j.produced_at) AS produced,
       extract(epoch FROM j.finished_at) AS finished, extract(epoch FROM r.sent_at) AS sent
FROM jobs j LEFT JOIN replies r ON r.job_id = j.job_id
WHERE j.job_id = ANY(CAST(:ids AS uuid[])) AND j.status = 'succeeded'
""")


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.asarray(values) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1),
            "p99_ms": round(float(p99), 1)}


def one_load(client: JobClient, db: Any, model: str, rate: float, load_s: float,
             seed: int) -> dict[str, Any]:
    jobs = make_jobs(model, max(20, int(rate * load_s)), seed)
    submitted: dict[str, float] = {}
    arrived: dict[str, float] = {}
    handles = []
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        ahead = i / rate - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
        submitted[job.job_id] = time.time()
        h = client.submit(job)
        h.add_done_callback(lambda h: arrived.__setitem__(h.job_id, time.time()))
        handles.append(h)
    offered = len(jobs) / (time.perf_counter() - t0)
    results = client.wait(handles, timeout=120)
    with db.connect() as conn:
        rows = conn.execute(LEDGER_SQL, {"ids": list(submitted)}).all()
    ok = [r for r in rows if r.sent is not None]
    rt = [arrived[r.job_id] - submitted[r.job_id] for r in ok]
    ledger = [float(r.finished - r.produced) for r in ok]
    relay = [float(r.sent - r.finished) for r in ok]
    reply_path = [arrived[r.job_id] - float(r.finished) for r in ok]
    out: dict[str, Any] = {
        "model": model, "target_jobs_per_s": rate, "offered_jobs_per_s": round(offered, 1),
        "jobs": len(jobs), "succeeded": sum(r.ok for r in results),
        "round_trip": _pct(rt), "produced_to_finished": _pct(ledger),
        "finished_to_sent": _pct(relay), "finished_to_in_hand": _pct(reply_path)}
    a, b = out["round_trip"]["p50_ms"], out["produced_to_finished"]["p50_ms"]
    out["added_p50_ms"] = None if a is None or b is None else round(a - b, 1)
    return out


DRAIN_SQL = text("""
SELECT count(*) AS jobs, count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       extract(epoch FROM max(finished_at) - min(received_at)) AS span_s
FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))
""")

TERMINAL_SQL = text("SELECT count(*) FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[])) "
                    "AND status IN ('succeeded', 'failed', 'rejected', 'expired')")

DEFAULT_DRAIN = {"digits-mlp": 20000, "minilm-l6": 1500}


def drain(s: Settings, stack: Stack, bridge: Any, db: Any, model: str, n: int,
          seed: int) -> tuple[dict[str, Any], Any]:
    """The capacity of this very stack: ``n`` jobs produced while no bridge reads them, then
    drained. Returns the drain's figures and the bridge started for it."""
    from producers.cli import produce

    bridge.stop()
    jobs = make_jobs(model, n, seed + 50)
    console.print(f"{model}: capacity drain, pre-loading {n} jobs")
    produce(s, iter(jobs), n)
    bridge = stack.bridge()
    ids = [j.job_id for j in jobs]
    wait(lambda: scalar(db, TERMINAL_SQL, {"ids": ids}), n, f"{model}: capacity drain",
         max(300.0, n / 20), stack)
    with db.connect() as conn:
        d = conn.execute(DRAIN_SQL, {"ids": ids}).one()
    span = float(d.span_s)
    return {"jobs": d.jobs, "succeeded": d.succeeded, "elapsed_s": round(span, 3),
            "jobs_per_s": round(d.jobs / span, 1)}, bridge


def run(settings: Settings, model: str, rates: list[float], load_s: float, workers: int,
        seed: int, relay: str = "process", loads: list[float] | None = None,
        drain_jobs: int = 0) -> list[dict[str, Any]]:
    """Each offered load in turn on one stack; with ``loads`` (fractions) the rates come from a
    capacity drain of ``drain_jobs`` on this stack first."""
    s, env = isolated(settings, "rt" + uuid.uuid4().hex[:6])
    env["AGENTQ_REPLY_RELAY"] = "off" if relay == "standalone" else relay
    ensure_topics(s.kafka)
    db = make_engine(s.worker_database_url, pool_size=1, app_name="agentq-bench-roundtrip")
    stack = Stack(env=env, log_dir=Path(tempfile.mkdtemp(prefix="agentq-roundtrip-")))
    try:
        stack.worker(concurrency=workers)
        bridge = stack.bridge()
        if relay == "standalone":
            stack.start("relay", [sys.executable, "-m", "cli.main", "relay"])
        with JobClient(s) as client:
            client.wait(client.submit_many(make_jobs(model, 100, seed + 99)), timeout=120)
            capacity = None
            if loads:
                capacity, bridge = drain(s, stack, bridge, db, model, drain_jobs, seed)
                console.print(f"{model}: capacity {capacity['jobs_per_s']:.0f} jobs/s")
                rates = [round(f * capacity["jobs_per_s"], 1) for f in loads]
                client.wait(client.submit_many(make_jobs(model, 100, seed + 98)), timeout=120)
            out = []
            for k, rate in enumerate(rates):
                console.print(f"{model}: {rate:.0f} jobs/s for {load_s:.0f} s, relay {relay}")
                row: dict[str, Any] = {"relay": relay}
                if capacity is not None and loads:
                    row.update(load=loads[k], capacity=capacity)
                out.append({**row, **one_load(client, db, model, rate, load_s, seed + k)})
                console.print_json(json.dumps(out[-1]))
        return out
    finally:
        stack.stop_all()
        db.dispose()
        delete_topics(s.kafka, [s.kafka.jobs_topic, s.kafka.dlq_topic])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="digits-mlp,minilm-l6")
    p.add_argument("--rates", help="jobs/s: 50,200 or per model digits-mlp=50:200,minilm-l6=5:20"
                   " (beats --loads)")
    p.add_argument("--loads", default="0.25,0.5", help="fractions of --capacity")
    p.add_argument("--capacity", default="measure", help="measure (a drain on the same stack "
                   "first), e2e (the drain rates of bench/results/e2e.json) or model=jobs/s,…")
    p.add_argument("--drain-jobs", help="backlog of the capacity drain: 20000 for every model "
                   "or per model digits-mlp=20000,minilm-l6=1500 (default those two)")
    p.add_argument("--load-s", type=float, default=15.0, help="seconds per load")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--relay", default="process", help="process (the bridge's relay child, "
                   "the default), thread (in the bridge), standalone (`agentq relay` beside a "
                   "bridge without one), or several, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "roundtrip.json")


def plot(res: dict[str, Any], path: Path) -> None:
    """p50 and p99 of produced → finished (the ledger) and the round trip, per model, relay and
    offered load: the gap between the two bars of a pair is the reply path's cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m, rows in res["models"].items() if rows]
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = res["models"][model]
        labels = [f"{r['relay']}\n{r['offered_jobs_per_s']:.0f}/s" for r in rows]
        x = range(len(rows))
        for off, key, name in ((-0.2, "produced_to_finished", "produced → finished"),
                               (0.2, "round_trip", "submit → in hand")):
            p50 = [r[key]["p50_ms"] for r in rows]
            p99 = [r[key]["p99_ms"] for r in rows]
            ax.bar([i + off for i in x], p99, width=0.38, alpha=0.35, label=f"{name} p99")
            ax.bar([i + off for i in x], p50, width=0.38, label=f"{name} p50")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_ylabel("ms")
        ax.set_title(model)
        ax.legend(fontsize=7)
    fig.suptitle(f"agentq round trip ({res.get('meta', {}).get('when', '')})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def register(sub: Any) -> None:
    p = sub.add_parser("roundtrip", help="submit → result in hand latency at offered loads",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=command)


def _capacities(arg: str | None) -> dict[str, float]:
    if arg and arg != "e2e":
        return {k: float(v) for k, v in (kv.split("=") for kv in arg.split(","))}
    try:
        e2e = json.loads((RESULTS / "e2e.json").read_text())
        return {m: r["agentq"]["drain"]["jobs_per_s"] for m, r in e2e["models"].items()
                if "agentq" in r}
    except (OSError, KeyError, ValueError):
        return {}


def _rates(arg: str, model: str) -> list[float]:
    """``50,200`` for every model, or ``digits-mlp=50:200,minilm-l6=5:20`` per model."""
    if "=" not in arg:
        return [float(r) for r in arg.split(",")]
    per = dict(kv.split("=") for kv in arg.split(","))
    return [float(r) for r in per.get(model, "").split(":") if r]


def command(args: argparse.Namespace, settings: Settings) -> int:
    db = make_engine(settings.worker_database_url, pool_size=1, app_name="agentq-bench-roundtrip")
    with db.connect() as conn:
        available = registered_names(conn)
    db.dispose()
    measure = not args.rates and args.capacity == "measure"
    caps = {} if measure else _capacities(args.capacity)
    drains = dict(DEFAULT_DRAIN)
    if args.drain_jobs and "=" in args.drain_jobs:
        drains.update({k: int(v) for k, v in (kv.split("=") for kv in args.drain_jobs.split(","))})
    elif args.drain_jobs:
        drains = {m: int(args.drain_jobs) for m in args.models.split(",")}
    res: dict[str, Any] = {"meta": {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": platform.platform(), "cpus": __import__("os").cpu_count(),
        "workers": args.workers, "load_s": args.load_s,
        "capacity": "measured in this run (see each row)" if measure else caps}, "models": {}}
    for model in args.models.split(","):
        if model not in available:
            console.print(f"[yellow]{model} is not registered; skipped")
            continue
        loads: list[float] | None = None
        if args.rates:
            rates = _rates(args.rates, model)
            if not rates:
                continue
        elif measure:
            loads, rates = [float(f) for f in args.loads.split(",")], []
        elif model in caps:
            rates = [round(float(f) * caps[model], 1) for f in args.loads.split(",")]
        else:
            console.print(f"[yellow]{model}: no capacity known (--capacity or --rates)")
            continue
        res["models"][model] = [row for relay in args.relay.split(",") for row in run(
            settings, model, rates, args.load_s, args.workers, args.seed, relay, loads,
            drains.get(model, 20000))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    plot(res, args.out.with_suffix(".png"))
    console.print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0
