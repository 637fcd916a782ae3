"""`agentq produce`: publish jobs from a JSONL file, stdin, or a synthetic stream at a rate."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentq.config import Settings
from producers.contract import JobMessage
from producers.errors import InvalidJob
from producers.producer import JobProducer
from producers.synthetic import synthetic_jobs
from producers.topics import ensure_topics


def register(sub: Any) -> None:
    p = sub.add_parser("produce", help="publish jobs to Kafka", description=__doc__)
    add_arguments(p)
    p.set_defaults(run=command)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="digits-mlp", help="model for synthetic jobs")
    p.add_argument("--count", type=int, default=1000, help="synthetic jobs to send")
    p.add_argument("--rate", type=float, default=0.0, help="jobs per second (0 = as fast as "
                   "possible)")
    p.add_argument("--file", help="JSONL file of job messages ('-' for stdin)")
    p.add_argument("--topic", help="topic (default AGENTQ_KAFKA_JOBS_TOPIC)")
    p.add_argument("--tenant", help="tenant for synthetic jobs")
    p.add_argument("--deadline-in-ms", type=int, help="deadline relative to now for synthetic jobs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _from_file(path: str) -> Iterator[dict[str, Any]]:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    try:
        for line in stream:
            if line.strip():
                yield json.loads(line)
    finally:
        if stream is not sys.stdin:
            stream.close()


def produce(settings: Settings, jobs: Iterator[JobMessage | dict[str, Any]], total: int | None,
            rate: float = 0.0, topic: str | None = None, quiet: bool = False) -> dict[str, Any]:
    ensure_topics(settings.kafka)
    sent = invalid = 0
    t0 = time.perf_counter()
    console = Console(stderr=True)
    with JobProducer(settings.kafka, settings.limits, topic=topic) as producer, Progress(
        TextColumn("[bold]produce"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[rate]:>8.0f} jobs/s"), console=console, disable=quiet,
    ) as progress:
        task = progress.add_task("produce", total=total, rate=0.0)
        for job in jobs:
            if rate > 0:
                ahead = sent / rate - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            try:
                producer.send(job)
                sent += 1
            except InvalidJob as e:
                invalid += 1
                console.print(f"[yellow]skipped invalid job: {e}")
            if sent % 500 == 0:
                el = time.perf_counter() - t0
                progress.update(task, completed=sent, rate=sent / el if el else 0.0)
        producer.flush()
        el = time.perf_counter() - t0
        progress.update(task, completed=sent, rate=sent / el if el else 0.0)
    elapsed = time.perf_counter() - t0
    return {"sent": sent, "invalid": invalid, "elapsed_s": round(elapsed, 3),
            "jobs_per_s": round(sent / elapsed, 1) if elapsed else None}


def command(args: argparse.Namespace, settings: Settings) -> int:
    if args.file:
        jobs: Iterator[Any] = _from_file(args.file)
        total = None
    else:
        deadline = int(time.time() * 1000) + args.deadline_in_ms if args.deadline_in_ms else None
        jobs = synthetic_jobs(args.model, args.count, seed=args.seed, tenant=args.tenant,
                              deadline_ms=deadline)
        total = args.count
    summary = produce(settings, jobs, total, rate=args.rate, topic=args.topic, quiet=args.quiet)
    print(json.dumps(summary))
    return 0
