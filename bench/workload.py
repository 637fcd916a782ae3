"""What the benchmarks share: their job workloads, an isolated topic/group/queue set per run,
and waiting with a progress bar (``bench.e2e``, ``bench.peers``, ``bench.roundtrip``,
``bench.stage_budget``)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from agentq.config import Settings
from ops.stack import Stack
from producers.contract import JobMessage
from producers.synthetic import sentence, synthetic_jobs

console = Console(stderr=True)


# -- workloads ---------------------------------------------------------------------------------
def mixed_texts(n: int, seed: int = 7, lo: int = 5, hi: int = 120) -> list[str]:
    """Texts whose token counts spread over lo..hi, skewed short (log-uniform word targets)."""
    rng = random.Random(seed)
    words: list[str] = []
    out = []
    for _ in range(n):
        target = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        k = max(2, int(target * 0.8) - 2)  # ~1.2 tokens per word for these sentences
        while len(words) < k:
            words += sentence(rng).split()
        out.append(" ".join(words[:k]))
        words = words[k:]
    return out


def make_jobs(model: str, n: int, seed: int) -> list[JobMessage]:
    if model == "digits-mlp":
        return list(synthetic_jobs(model, n, seed=seed))
    rng = random.Random(seed)
    return [JobMessage.new(model, {"text": t}, tenant=f"tenant-{rng.randrange(8)}")
            for t in mixed_texts(n, seed)]


def isolated(settings: Settings, tag: str) -> tuple[Settings, dict[str, str]]:
    kafka = replace(settings.kafka, jobs_topic=f"agentq.e2e.{tag}",
                    dlq_topic=f"agentq.e2e.{tag}.dlq", group_id=f"agentq-e2e-{tag}")
    s = replace(settings, kafka=kafka, queue_prefix=f"e2e{tag}.")
    env = {"AGENTQ_KAFKA_JOBS_TOPIC": kafka.jobs_topic, "AGENTQ_KAFKA_DLQ_TOPIC": kafka.dlq_topic,
           "AGENTQ_KAFKA_GROUP_ID": kafka.group_id, "AGENTQ_QUEUE_PREFIX": s.queue_prefix,
           "AGENTQ_LOG_LEVEL": "WARNING",
           # The benches' jobs ask no reply, and a bridge's relay child would spend its start-up
           # (1.5 s of CPU, once) inside a drain that lasts seconds; the bridge's own start-up is
           # left out the same way. The round-trip bench turns the relay on.
           "AGENTQ_REPLY_RELAY": "off"}
    return s, env


def drop_queues(s: Settings) -> None:
    """Delete the Celery queues of an ``isolated`` run (what its stopped workers left in Redis)."""
    import redis

    from workers.queues import QUEUES

    redis.Redis.from_url(s.redis_url).delete(*(s.queue_prefix + q for q in QUEUES))


# -- waiting and progress ----------------------------------------------------------------------
def scalar(db: Engine, sql: Any, params: dict[str, Any] | None = None) -> int:
    with db.connect() as conn:
        return int(conn.execute(sql, params or {}).scalar_one())


def progress(items: list[Any], label: str, every: int = 500):
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(label, total=len(items))
        for i, item in enumerate(items):
            yield item
            if i % every == 0:
                bar.update(task, completed=i)
        bar.update(task, completed=len(items))


def next_poll_s(remaining: int, rate: float, min_s: float, max_s: float = 2.0) -> float:
    """How long to sleep before the next progress count: half the time the rest should take at
    the rate seen so far, within [min_s, max_s]. A count is a query on the ledger the pipeline
    writes to (measured: a 0.2 s poll took 44% of a core from a 2-core drain), and every bench
    takes its rates from the ledger's timestamps, not from when the poll noticed the end."""
    if rate <= 0:
        return min_s
    return min(max_s, max(min_s, remaining / rate / 2))


def wait(count: Any, total: int, label: str, timeout_s: float, stack: Stack,
          interval_s: float = 0.5) -> None:
    start = time.monotonic()
    end = start + timeout_s
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(label, total=total)
        done = first = count()
        while True:
            bar.update(task, completed=done)
            if done >= total:
                return
            if time.monotonic() > end:
                console.print(stack.logs(), markup=False)
                raise TimeoutError(f"{label}: {done}/{total} after {timeout_s:.0f}s")
            rate = (done - first) / max(1e-6, time.monotonic() - start)
            time.sleep(next_poll_s(total - done, rate, interval_s))
            done = count()
