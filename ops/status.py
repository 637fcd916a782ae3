"""`agentq status`: one screen — Kafka lag per partition, Celery queue depth, workers, in-flight
jobs, and per-model throughput and latency percentiles from the ledger. ``--watch`` refreshes it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine

from agentq.config import Settings
from storage.db import make_engine
from storage.queries import model_report, open_jobs


@dataclass
class Snapshot:
    at: float
    lag: dict[int, int] = field(default_factory=dict)
    queue_depth: int | None = None
    workers: dict[str, int] = field(default_factory=dict)
    open_jobs: dict[str, int] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class StatusReader:
    def __init__(self, settings: Settings, db: Engine, window_s: float) -> None:
        self.s = settings
        self.db = db
        self.window_s = window_s
        self._lag: Any = None
        self._redis: Any = None
        self._pool: Any = None

    def read(self) -> Snapshot:
        snap = Snapshot(time.time())
        for name, fn in (("kafka", self._read_lag), ("redis", self._read_depth),
                         ("celery", self._read_workers), ("postgres", self._read_ledger)):
            try:
                fn(snap)
            except Exception as e:  # one service down must not blank the screen
                snap.errors.append(f"{name}: {str(e)[:120]}")
        return snap

    def _read_lag(self, snap: Snapshot) -> None:
        from ops.lag import LagReader

        self._lag = self._lag or LagReader(self.s.kafka)
        snap.lag = {p.partition: p.lag for p in self._lag.read()}

    def _read_depth(self, snap: Snapshot) -> None:
        import redis

        from workers.queues import queue_depth

        self._redis = self._redis or redis.Redis.from_url(self.s.redis_url, socket_timeout=3)
        snap.queue_depth = queue_depth(self._redis, self.s.queue_prefix)

    def _read_workers(self, snap: Snapshot) -> None:
        from ops.pool import CeleryPool
        from workers.app import make_celery
        from workers.queues import queue_names

        self._pool = self._pool or CeleryPool(
            make_celery(self.s), queue_names(self.s.queue_prefix), timeout_s=1.0)
        snap.workers = self._pool.workers()

    def _read_ledger(self, snap: Snapshot) -> None:
        with self.db.connect() as conn:
            snap.models = model_report(conn, self.window_s)
            snap.open_jobs = open_jobs(conn, self.s.kafka.jobs_topic)

    def close(self) -> None:
        if self._lag is not None:
            self._lag.close()
        if self._redis is not None:
            self._redis.close()


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}"


def render(snap: Snapshot, settings: Settings, window_s: float) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row("topic", settings.kafka.jobs_topic, "group", settings.kafka.group_id)
    head.add_row("total lag", f"{sum(snap.lag.values()):,}", "queue depth (batches)",
                 "-" if snap.queue_depth is None else f"{snap.queue_depth:,}")
    head.add_row("queued", f"{snap.open_jobs.get('queued', 0):,}", "running",
                 f"{snap.open_jobs.get('running', 0):,}")

    lag = Table(title="Kafka lag per partition", expand=False)
    lag.add_column("partition", justify="right")
    lag.add_column("lag", justify="right")
    for p, n in sorted(snap.lag.items()):
        lag.add_row(str(p), f"{n:,}")

    workers = Table(title="Celery workers on " + ", ".join(
        settings.queue_prefix + q for q in ("cpu", "gpu")))
    workers.add_column("worker")
    workers.add_column("processes", justify="right")
    for host, n in sorted(snap.workers.items()):
        workers.add_row(host, str(n))
    if not snap.workers:
        workers.add_row("(none answered)", "0")

    models = Table(title=f"Per model, last {window_s:.0f} s (latency: produced → finished)")
    for col in ("model", "jobs/s", "succeeded", "not ok", "p50 ms", "p95 ms", "p99 ms"):
        models.add_column(col, justify="left" if col == "model" else "right")
    for m in snap.models:
        models.add_row(m["model"], f"{m['finished'] / window_s:,.1f}", f"{m['succeeded']:,}",
                       f"{m['not_ok']:,}", _ms(m["p50"]), _ms(m["p95"]), _ms(m["p99"]))
    parts: list[Any] = [head, lag, workers, models]
    if snap.errors:
        parts.append("[red]" + "\n".join(snap.errors) + "[/red]")
    parts.append(time.strftime("[dim]%Y-%m-%d %H:%M:%S[/dim]", time.localtime(snap.at)))
    return Group(*parts)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval-s", type=float, default=2.0)
    p.add_argument("--window-s", type=float, default=60.0, help="throughput/latency window")


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="live view of lag, queues, workers, latency",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=command)


def command(args: argparse.Namespace, settings: Settings) -> int:
    db = make_engine(settings.worker_database_url, pool_size=1, app_name="agentq-status")
    reader = StatusReader(settings, db, args.window_s)
    console = Console()
    try:
        if not args.watch:
            console.print(render(reader.read(), settings, args.window_s))
            return 0
        if not console.is_terminal:  # piped: print one screen per refresh
            while True:
                console.print(render(reader.read(), settings, args.window_s))
                time.sleep(args.interval_s)
        with Live(render(reader.read(), settings, args.window_s), console=console,
                  refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(args.interval_s)
                live.update(render(reader.read(), settings, args.window_s))
    except KeyboardInterrupt:
        return 0
    finally:
        reader.close()
        db.dispose()
