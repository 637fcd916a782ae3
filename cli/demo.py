"""`agentq demo`: start a worker pool and a bridge, push a job stream through the whole system,
wait for every job to end, print throughput, latency and a sample SQL result; then a few
agent-style round trips through ``JobClient`` (submit, wait for the reply, print it)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import text

from agentq.config import Settings
from ops.stack import Stack
from producers.cli import produce
from producers.synthetic import synthetic_jobs
from producers.topics import ensure_topics
from storage.db import make_engine
from storage.registry import registered_names

SUMMARY_SQL = """
SELECT model,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status IN ('failed', 'rejected', 'expired')) AS not_succeeded,
       round(extract(epoch FROM max(finished_at) - min(produced_at))::numeric, 2) AS span_s,
       round((1000 * percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM finished_at - produced_at)))::numeric, 1) AS p50_ms,
       round((1000 * percentile_cont(0.99) WITHIN GROUP (
           ORDER BY extract(epoch FROM finished_at - produced_at)))::numeric, 1) AS p99_ms
FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[])) GROUP BY model ORDER BY model
"""

SPAN_SQL = """
SELECT extract(epoch FROM max(finished_at) - min(produced_at))::float
FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))
"""

SAMPLE_SQL = """
SELECT r.label AS digit, count(*) AS jobs, round(avg(r.probs[r.label + 1])::numeric, 3)
       AS mean_confidence
FROM results r JOIN jobs j USING (job_id)
WHERE j.model = 'digits-mlp' AND j.job_id = ANY(CAST(:ids AS uuid[]))
GROUP BY r.label ORDER BY r.label
"""


def _table(title: str, rows: Sequence[Any]) -> Table:
    table = Table(title=title)
    if not rows:
        return table
    for col in rows[0]._fields:
        table.add_column(col)
    for r in rows:
        table.add_row(*[str(v) for v in r])
    return table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--digits", type=int, default=10_000, help="digits-mlp jobs")
    p.add_argument("--minilm", type=int, default=1_000, help="minilm-l6 jobs (if built)")
    p.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    p.add_argument("--timeout-s", type=float, default=600)
    p.add_argument("--round-trips", type=int, default=3, help="agent-style round trips per "
                   "model after the stream (0 = none)")


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="push a job stream through the whole system",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=command)


def command(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    db = make_engine(settings.worker_database_url, pool_size=2, app_name="agentq-demo")
    with db.connect() as conn:
        available = registered_names(conn)
    ensure_topics(settings.kafka)
    logs = Path(tempfile.mkdtemp(prefix="agentq-demo-"))
    stack = Stack(env={}, log_dir=logs)
    stack.worker(concurrency=args.workers)
    stack.bridge()
    console.print(f"[bold]agentq demo[/]: worker pool ({args.workers} processes) and bridge "
                  f"started; logs in {logs}")
    ids: list[str] = []

    def tracked(model: str, count: int, seed: int):
        for job in synthetic_jobs(model, count, seed=seed):
            ids.append(job.job_id)
            yield job

    try:
        t0 = time.time()
        produced = {}
        plan = [("digits-mlp", args.digits), ("minilm-l6", args.minilm)]
        for seed, (model, count) in enumerate(plan):
            if count <= 0:
                continue
            if model not in available:
                console.print(f"[yellow]{model} is not built/registered; skipping its jobs")
                continue
            console.print(f"producing {count} {model} jobs")
            produced[model] = produce(settings, tracked(model, count, seed), count)
        _wait(db, ids, args.timeout_s, console)
        elapsed = time.time() - t0
        with db.connect() as conn:
            summary = conn.execute(text(SUMMARY_SQL), {"ids": ids}).all()
            sample = conn.execute(text(SAMPLE_SQL), {"ids": ids}).all()
            span_s = conn.execute(text(SPAN_SQL), {"ids": ids}).scalar_one() or elapsed
        console.print(_table("jobs by model (latency = finished - produced)", summary))
        total_ok = sum(r.succeeded for r in summary)
        console.print(f"[bold]{len(ids)} jobs: {len(ids) / span_s:.0f} jobs/s through the "
                      f"pipeline (first produced → last finished, {span_s:.1f} s); "
                      f"{len(ids) / elapsed:.0f} jobs/s wall clock including start-up and "
                      f"producing[/]")
        console.print("sample SQL:\n" + SAMPLE_SQL.strip(), markup=False)
        console.print(_table("digits-mlp results by predicted digit", sample))
        trips = round_trips(settings, available, args.round_trips, console)
        print(json.dumps({"jobs": len(ids), "succeeded": total_ok, "elapsed_s": round(elapsed, 2),
                          "round_trips": trips, "pipeline_s": round(span_s, 2),
                          "pipeline_jobs_per_s": round(len(ids) / span_s, 1),
                          "jobs_per_s": round(len(ids) / elapsed, 1), "produce": produced,
                          "by_model": [dict(r._mapping) for r in summary]}, default=str))
        trips_ok = all(t["status"] == "succeeded" for t in trips)
        return 0 if total_ok == len(ids) and trips_ok else 1
    finally:
        stack.stop_all()
        db.dispose()


AGENT_TEXTS = ("reset my password", "where is my order?", "cancel my subscription")


def round_trips(settings: Settings, available: set[str], n: int,
                console: Console) -> list[dict[str, Any]]:
    """Submit a few jobs the way an agent does and wait for each reply; returns what was seen."""
    if n <= 0:
        return []
    from producers.client import JobClient
    from producers.contract import JobMessage

    jobs = []
    if "minilm-l6" in available:
        jobs += [JobMessage.new("minilm-l6", {"text": t}) for t in (AGENT_TEXTS * n)[:n]]
    if "minilm-l6-fast" in available:  # the faster tier, on the same texts: same space
        jobs += [JobMessage.new("minilm-l6-fast", {"text": t}) for t in AGENT_TEXTS[:min(n, 1)]]
    if "digits-mlp" in available:
        jobs += list(synthetic_jobs("digits-mlp", n, seed=42))
    out = []
    exact: dict[str, list[float]] = {}  # minilm-l6's embedding of each text, for the fast tier
    with JobClient(settings, db_url=settings.worker_database_url) as client:
        for job in jobs:
            t0 = time.perf_counter()
            res = client.submit(job).result(timeout=60)
            ms = (time.perf_counter() - t0) * 1000
            if res.embedding is not None:
                head = [round(x, 4) for x in res.embedding[:3]]
                shown = f"embedding[{len(res.embedding)}] = {head}…"
                text_ = str(job.input.get("text"))
                if job.model == "minilm-l6":
                    exact[text_] = list(res.embedding)
                elif text_ in exact:
                    cos = sum(a * b for a, b in zip(res.embedding, exact[text_], strict=True))
                    shown += f", cosine to minilm-l6's {cos:.4f}"
            else:
                shown = f"label {res.label} (p={max(res.probs or [0]):.3f})"
            what = job.input.get("text") or "8x8 image"
            console.print(f"round trip [bold]{job.model}[/] {what!r}: {res.status}, {shown}, "
                          f"{ms:.1f} ms submit → result in hand")
            out.append({"model": job.model, "status": res.status, "round_trip_ms": round(ms, 1)})
    return out


def _wait(db: Any, ids: list[str], timeout_s: float, console: Console) -> None:
    sql = text("SELECT count(*) FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[])) AND status "
               "IN ('succeeded', 'failed', 'rejected', 'expired')")
    end = time.monotonic() + timeout_s
    with Progress(TextColumn("[bold]jobs done"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("done", total=len(ids))
        while True:
            with db.connect() as conn:
                done = conn.execute(sql, {"ids": ids}).scalar_one()
            progress.update(task, completed=done)
            if done >= len(ids):
                return
            if time.monotonic() > end:
                raise TimeoutError(f"only {done}/{len(ids)} jobs finished in {timeout_s}s")
            time.sleep(0.5)
