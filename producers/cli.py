"""`agentq produce`: publish jobs from a JSONL file, stdin, or a synthetic stream at a rate."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import sys
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentq.config import Settings
from producers.contract import JobMessage
from producers.errors import InvalidJob, ProducerError
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
    p.add_argument("--processes", type=int, default=1,
                   help="synthetic jobs from this many producer processes, each sending its share "
                        "at its share of --rate (one process, generating its jobs too, sent "
                        "~12,000 digits jobs/s on a 2-core machine)")
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
            rate: float = 0.0, topic: str | None = None, quiet: bool = False,
            sent_counter: Any = None) -> dict[str, Any]:
    """Publish ``jobs`` (at ``rate`` jobs/s when > 0) with a progress bar; ``sent_counter`` (a
    shared ``multiprocessing.Value``) is advanced as they go when a parent shows the progress."""
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
                if sent_counter is not None:
                    with sent_counter.get_lock():
                        sent_counter.value += 500
                el = time.perf_counter() - t0
                progress.update(task, completed=sent, rate=sent / el if el else 0.0)
        producer.flush()
        el = time.perf_counter() - t0
        progress.update(task, completed=sent, rate=sent / el if el else 0.0)
    elapsed = time.perf_counter() - t0
    return {"sent": sent, "invalid": invalid, "elapsed_s": round(elapsed, 3),
            "jobs_per_s": round(sent / elapsed, 1) if elapsed else None}


def _share(index: int, count: int, model: str, rate: float, topic: str | None, seed: int,
           tenant: str | None, deadline_ms: int | None, sent_counter: Any, results: Any) -> None:
    """One producer process of ``produce_in_processes`` (its own Kafka producer, settings from
    the environment it inherits); puts its summary on ``results``."""
    jobs = synthetic_jobs(model, count, seed=seed, tenant=tenant, deadline_ms=deadline_ms)
    summary = produce(Settings.from_env(), jobs, count, rate=rate, topic=topic, quiet=True,
                      sent_counter=sent_counter)
    results.put({"index": index, **summary})


def produce_in_processes(settings: Settings, processes: int, model: str, count: int,
                         rate: float = 0.0, topic: str | None = None, seed: int = 0,
                         tenant: str | None = None, deadline_ms: int | None = None,
                         quiet: bool = False) -> dict[str, Any]:
    """Synthetic jobs from ``processes`` producer processes (spawned: no Kafka client crosses a
    fork), each sending its share of ``count`` at its share of ``rate``; one progress bar here.
    Returns the combined summary, with each process's."""
    ensure_topics(settings.kafka)
    topic = topic or settings.kafka.jobs_topic  # the children read the rest from the environment
    ctx = multiprocessing.get_context("spawn")
    counter, results = ctx.Value("q", 0), ctx.Queue()
    shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    procs = [ctx.Process(target=_share, name=f"agentq-produce-{i}", daemon=True, args=(
        i, n, model, rate / processes, topic, seed + i, tenant, deadline_ms, counter, results))
        for i, n in enumerate(shares)]
    t0 = time.perf_counter()
    for proc in procs:
        proc.start()
    got: list[dict[str, Any]] = []
    with Progress(TextColumn("[bold]produce"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn(f"{processes} processes"),
                  console=Console(stderr=True), disable=quiet) as progress:
        task = progress.add_task("produce", total=count)
        while len(got) < processes:
            try:
                got.append(results.get(timeout=0.2))
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
            progress.update(task, completed=counter.value)
        progress.update(task, completed=sum(r["sent"] for r in got))
    for proc in procs:
        proc.join(timeout=30)
    if len(got) < processes:
        codes = [p.exitcode for p in procs]
        raise ProducerError(f"{processes - len(got)} of {processes} producer processes ended "
                            f"without a summary (exit codes {codes})")
    elapsed = time.perf_counter() - t0
    sent = sum(r["sent"] for r in got)
    return {"sent": sent, "invalid": sum(r["invalid"] for r in got),
            "elapsed_s": round(elapsed, 3), "jobs_per_s": round(sent / elapsed, 1),
            "processes": sorted(got, key=lambda r: r["index"])}


def command(args: argparse.Namespace, settings: Settings) -> int:
    if args.processes > 1 and not args.file:
        deadline = int(time.time() * 1000) + args.deadline_in_ms if args.deadline_in_ms else None
        print(json.dumps(produce_in_processes(
            settings, args.processes, args.model, args.count, rate=args.rate, topic=args.topic,
            seed=args.seed, tenant=args.tenant, deadline_ms=deadline, quiet=args.quiet)))
        return 0
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
