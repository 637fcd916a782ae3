"""Burst run: offered load well above capacity, then idle, with the real autoscaler driving a
real Celery worker. Writes ``bench/results/burst.json`` and ``bench/results/burst.png`` (offered
load, lag, workers, throughput over time).

    python -m bench.burst --rate 300 --burst-s 60 --idle-s 90 --max-workers 4

Each worker batch sleeps ``--batch-delay-ms`` (``tests.slow_batches``) so capacity per process is
small and CPU-free: on a small machine adding processes really adds throughput. The pieces
(producer at a fixed rate, in-flight sampler, trace reader) are shared with
``tests/integration/test_burst.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


@dataclass
class Produced:
    job_ids: list[str] = field(default_factory=list)
    per_second: list[tuple[float, int]] = field(default_factory=list)  # (wall time, jobs)


def produce_at_rate(settings: Any, rate: float, duration_s: float, out: Produced,
                    stop: threading.Event | None = None) -> Produced:
    """Send digits jobs at ``rate`` per second for ``duration_s`` (keys spread partitions)."""
    from producers.contract import JobMessage
    from producers.producer import JobProducer

    pixels = [float(i % 16) for i in range(64)]
    with JobProducer(settings.kafka, settings.limits, linger_ms=5) as producer:
        start = time.monotonic()
        sent = 0
        second, in_second = int(time.time()), 0
        while time.monotonic() - start < duration_s and not (stop and stop.is_set()):
            due = int((time.monotonic() - start) * rate) + 1
            while sent < due:
                job = JobMessage.new("digits-mlp", {"pixels": pixels}, tenant="burst")
                producer.send(job, validate=False)
                out.job_ids.append(job.job_id)
                sent += 1
                now_s = int(time.time())
                if now_s != second:
                    out.per_second.append((float(second), in_second))
                    second, in_second = now_s, 0
                in_second += 1
            time.sleep(0.005)
        producer.flush()
        out.per_second.append((float(second), in_second))
    return out


class Sampler(threading.Thread):
    """Calls ``fn`` every ``interval_s`` and keeps (wall time, value)."""

    def __init__(self, fn: Callable[[], Any], interval_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.fn, self.interval_s = fn, interval_s
        self.samples: list[tuple[float, Any]] = []
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval_s):
            try:
                self.samples.append((time.time(), self.fn()))
            except Exception:
                self.errors += 1


def autoscaler_argv(trace: Path, min_workers: int, max_workers: int, target_drain_s: float,
                    down_window_s: float, settle_s: float, interval_s: float = 1.0) -> list[str]:
    return [sys.executable, "-m", "cli.main", "autoscale", "--trace", str(trace),
            "--min-workers", str(min_workers), "--max-workers", str(max_workers),
            "--target-drain-s", str(target_drain_s), "--scale-down-window-s", str(down_window_s),
            "--gain-settle-s", str(settle_s), "--interval-s", str(interval_s),
            "--window-s", "5"]


def read_trace(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written
    return rows


def direction_changes(counts: list[int]) -> int:
    """Number of monotone runs of a worker-count series: 1→3→1 has 2 (up, then down)."""
    moves = [b - a for a, b in zip(counts, counts[1:], strict=False) if b != a]
    if not moves:
        return 0
    return 1 + sum(1 for x, y in zip(moves, moves[1:], strict=False) if (x > 0) != (y > 0))


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = result["t0"]
    trace = result["trace"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    ax = axes[0]
    ax.step([t - t0 for t, _ in result["offered"]], [n for _, n in result["offered"]],
            where="post", label="offered (jobs/s)")
    ax.plot([r["wall"] - t0 for r in trace], [r["throughput_jobs_s"] for r in trace],
            label="throughput (jobs/s, 5 s window)")
    ax.set_ylabel("jobs/s")
    ax.legend(loc="upper right")
    ax = axes[1]
    ax.plot([r["wall"] - t0 for r in trace], [r["lag"] for r in trace], label="Kafka lag")
    ax.plot([t - t0 for t, _ in result["inflight"]], [n for _, n in result["inflight"]],
            label="in flight (ledger)")
    ax.axhline(result["config"]["inflight_cap"], color="red", ls="--", lw=1, label="in-flight cap")
    ax.set_ylabel("jobs")
    ax.legend(loc="upper right")
    ax = axes[2]
    ax.step([r["wall"] - t0 for r in trace], [r["desired_workers"] for r in trace],
            where="post", label="desired workers")
    ax.step([r["wall"] - t0 for r in trace], [r["actual_workers"] for r in trace],
            where="post", label="actual workers", ls="--")
    ax.set_ylabel("worker processes")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper right")
    fig.suptitle(f"agentq burst: {result['config']['rate']} jobs/s for "
                 f"{result['config']['burst_s']} s, then idle")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--burst-s", type=float, default=60.0)
    p.add_argument("--idle-s", type=float, default=90.0)
    p.add_argument("--max-workers", type=int, default=4)
    p.add_argument("--batch-delay-ms", type=int, default=100)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--inflight-cap", type=int, default=200)
    p.add_argument("--target-drain-s", type=float, default=15.0)
    p.add_argument("--down-window-s", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=RESULTS)


def register(sub: Any) -> None:
    p = sub.add_parser("burst", help="a burst: offered load, lag, workers, throughput",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=command)


def main(argv: list[str] | None = None) -> int:
    from agentq.config import Settings

    p = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__)
    add_arguments(p)
    return command(p.parse_args(argv), Settings.from_env())


def command(args: argparse.Namespace, settings: Any) -> int:

    from agentq.config import Settings
    from ops.lag import inflight_jobs
    from producers.topics import ensure_topics
    from storage.db import make_engine
    from tests.support import Stack, isolated_settings, wait_terminal

    base = Settings.from_env()
    s, env = isolated_settings(base, "bench-burst")
    env.update(_burst_env(args.max_batch, args.inflight_cap, args.batch_delay_ms))
    os.environ.update(env)
    s = Settings.from_env()
    ensure_topics(s.kafka)
    log_dir = Path(f"/tmp/agentq-burst-{int(time.time())}")
    stack = Stack(env=env, log_dir=log_dir)
    db = make_engine(s.worker_database_url, pool_size=2, app_name="agentq-bench")
    trace = log_dir / "autoscale.jsonl"
    try:
        stack.worker(concurrency=1, args=("-I", "tests.slow_batches"))
        stack.bridge()
        stack.start("autoscaler", autoscaler_argv(trace, 1, args.max_workers,
                                                 args.target_drain_s, args.down_window_s, 5.0))
        time.sleep(8)  # processes up
        sampler = Sampler(lambda: inflight_jobs(db, s.kafka.jobs_topic), 0.5)
        sampler.start()
        t0 = time.time()
        produced = produce_at_rate(s, args.rate, args.burst_s, Produced())
        statuses = wait_terminal(db, produced.job_ids, timeout_s=args.burst_s * 10 + 120)
        left = args.idle_s - (time.time() - t0 - args.burst_s)
        if left > 0:
            time.sleep(left)
        sampler.halt.set()
        rows = [r for r in read_trace(trace) if r["wall"] >= t0 - 2]
        result = {
            "t0": t0,
            "config": {"rate": args.rate, "burst_s": args.burst_s, "idle_s": args.idle_s,
                       "max_workers": args.max_workers, "batch_delay_ms": args.batch_delay_ms,
                       "max_batch": args.max_batch, "inflight_cap": args.inflight_cap,
                       "target_drain_s": args.target_drain_s,
                       "down_window_s": args.down_window_s, "cpus": os.cpu_count()},
            "summary": summarize(produced, statuses, rows, sampler.samples, t0),
            "offered": produced.per_second,
            "inflight": sampler.samples,
            "trace": rows,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "burst.json").write_text(json.dumps(result, indent=1))
        plot(result, args.out / "burst.png")
        print(json.dumps(result["summary"], indent=1))
    finally:
        stack.stop_all()
        db.dispose()
    return 0


def _burst_env(max_batch: int, cap: int, delay_ms: int) -> dict[str, str]:
    return {"AGENTQ_BRIDGE_MAX_BATCH": str(max_batch),
            "AGENTQ_BRIDGE_MAX_INFLIGHT_JOBS": str(cap),
            "AGENTQ_BRIDGE_POLL_MAX_RECORDS": str(max(1, min(50, cap // 4))),
            # watermarks out of the way: the in-flight cap is what holds the backlog in Kafka
            "AGENTQ_BRIDGE_QUEUE_HIGH_WATERMARK": "100000",
            "AGENTQ_BRIDGE_QUEUE_LOW_WATERMARK": "50000",
            "AGENTQ_TEST_BATCH_DELAY_MS": str(delay_ms),
            "AGENTQ_LOG_LEVEL": "INFO"}


def summarize(produced: Produced, statuses: dict[str, str], trace: list[dict[str, Any]],
              inflight: list[tuple[float, Any]], t0: float) -> dict[str, Any]:
    actual = [r["actual_workers"] for r in trace]
    desired = [r["desired_workers"] for r in trace]
    thr = [r["throughput_jobs_s"] for r in trace]
    by_status: dict[str, int] = {}
    for v in statuses.values():
        by_status[v] = by_status.get(v, 0) + 1
    first_up = next((r["wall"] - t0 for r in trace if r["desired_workers"] > 1), None)
    peak = desired.index(max(desired)) if desired else 0
    back_down = next((r["wall"] - t0 for r in trace[peak:]
                      if r["desired_workers"] == min(desired)), None)
    drained = next((r["wall"] - t0 for r in trace[peak:] if r["lag"] == 0), None)
    return {
        "jobs_produced": len(produced.job_ids), "jobs_by_status": by_status,
        "max_lag": max((r["lag"] for r in trace), default=0),
        "max_inflight": max((v for _, v in inflight), default=0),
        "max_desired_workers": max(desired, default=0),
        "max_actual_workers": max(actual, default=0),
        "final_actual_workers": actual[-1] if actual else None,
        "direction_changes_desired": direction_changes(desired),
        "direction_changes_actual": direction_changes(actual),
        "peak_throughput_jobs_s": max(thr, default=0),
        "first_scale_up_s": first_up, "lag_drained_at_s": drained,
        "back_to_min_workers_at_s": back_down,
        "reasons": sorted({r["reason"] for r in trace}),
    }


if __name__ == "__main__":
    sys.exit(main())
