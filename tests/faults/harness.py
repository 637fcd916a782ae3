"""Shared pieces of the fault-injection suite: service faults through scripts/services.sh, job
streams, and the invariant check every row of the fault matrix ends with (DESIGN §4)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sklearn.datasets import load_digits
from sqlalchemy import text

from agentq.config import Settings
from producers.contract import JobMessage
from producers.producer import JobProducer
from tests.support import REPO, wait_for

TERMINAL = {"succeeded", "failed", "rejected", "expired"}

# Fault-friendly timings for the processes under test: a short lease so the reaper acts within
# seconds, a short Kafka session so a dead bridge's partitions move quickly.
FAULT_ENV = {
    "AGENTQ_WORKER_LEASE_S": "15",
    "AGENTQ_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "AGENTQ_WORKER_MAX_ATTEMPTS": "3",
    "AGENTQ_LOG_LEVEL": "INFO",
    "PYTHONFAULTHANDLER": "1",  # SIGABRT on a hung process dumps every thread's stack to its log
}


def services_sh(*args: str, timeout_s: float = 240) -> None:
    """Run scripts/services.sh with the test environment (the same AGENTQ_* the tests use)."""
    subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), *args], check=True,
                   timeout=timeout_s, env=dict(os.environ), cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def restore_services() -> None:
    """Bring every service back (idempotent); called from finally blocks and fixtures."""
    for attempt in range(3):
        try:
            services_sh("up", timeout_s=300)
            return
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            if attempt == 2:
                raise
            time.sleep(2)


_DIGITS: Any = None


def digits_jobs(n: int, marker: str | None = None, tenant: str = "faults") -> list[JobMessage]:
    """``n`` valid digits jobs; ``marker`` goes into the input so a keyed failpoint can match."""
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = load_digits().data
    jobs = []
    for i in range(n):
        inp: dict[str, Any] = {"pixels": _DIGITS[i % len(_DIGITS)].tolist()}
        if marker:
            inp["tag"] = marker
        jobs.append(JobMessage.new("digits-mlp", inp, tenant=tenant))
    return jobs


def produce(settings: Settings, jobs: Iterable[JobMessage], raw: Sequence[bytes] = (),
            pace_s: float = 0.0) -> None:
    with JobProducer(settings.kafka, settings.limits) as producer:
        for i, job in enumerate(jobs):
            producer.send(job)
            if pace_s and i % 20 == 19:
                producer.flush()
                time.sleep(pace_s)
        for value in raw:
            producer.send_raw(value)
        producer.flush(30)


def kcat_produce(settings: Settings, values: Sequence[bytes]) -> None:
    """Produce raw records with kcat (any Kafka client must be handled the same way)."""
    for v in values:
        subprocess.run(["kcat", "-P", "-b", settings.kafka.bootstrap_servers,
                        "-t", settings.kafka.jobs_topic], input=v, check=True, timeout=30)


def _succeeded_of(db: Any, ids: Sequence[str]) -> int:
    with db.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[])) AND "
            "status = 'succeeded'"), {"ids": list(ids)}).scalar_one())


def warm_stream(settings: Settings, db: Any, n: int = 240, pace_s: float = 1.0,
                progress: int = 20) -> tuple[list[JobMessage], threading.Thread]:
    """A few warm-up jobs through the running bridge and worker first, then ``n`` jobs in steps
    of 20 every ``pace_s`` on a thread, returned once ``progress`` of them succeeded: the stream
    is still running when a fault is injected next, however long the processes took to start
    (a stream started while the worker still loads could be done before the fault, and the row
    would prove nothing). Returns (every job, warm-up included; the producing thread)."""
    warm = digits_jobs(8)
    produce(settings, warm)
    wait_for(lambda: _succeeded_of(db, [j.job_id for j in warm]) >= len(warm), 90,
             what="the warm-up jobs")
    jobs = digits_jobs(n)
    t = threading.Thread(target=produce, args=(settings, jobs), kwargs={"pace_s": pace_s},
                         daemon=True)
    t.start()
    wait_for(lambda: _succeeded_of(db, [j.job_id for j in jobs]) >= progress, 90,
             what="some progress")
    return warm + jobs, t


@dataclass
class Verdict:
    statuses: Counter = field(default_factory=Counter)
    rows: int = 0
    results: int = 0
    recovered_s: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    executions: Counter = field(default_factory=Counter)  # attempts -> jobs


def assert_in_flight(db: Any, topic: str, total: int) -> int:
    """Work is in flight right now (fewer than ``total`` jobs of the topic are terminal), so a
    fault injected next hits it; returns how many are unfinished."""
    with db.connect() as conn:
        done = conn.execute(text(
            "SELECT count(*) FROM jobs WHERE source_topic = :t AND status IN "
            "('succeeded', 'failed', 'rejected', 'expired')"), {"t": topic}).scalar_one()
    unfinished = total - int(done)
    assert unfinished > 0, f"no work in flight: all {total} jobs are already terminal"
    return unfinished


def check_invariants(db: Any, topic: str, job_ids: Sequence[str], expect_records: int,
                     timeout_s: float = 180.0, max_executions: int = 1) -> Verdict:
    """Every produced job ends in exactly one terminal ledger row, no job_id has two result
    rows, a result exists exactly for the succeeded jobs, inference ran at most
    ``max_executions`` times for any job (its attempts: 1 unless the fault could make a batch run
    again), and all of it within ``timeout_s``.

    ``expect_records``: distinct ledger rows the topic must produce (jobs plus records without a
    usable job_id; a duplicated job_id counts once).
    """
    t0 = time.monotonic()
    ids = list(dict.fromkeys(job_ids))

    def settled() -> list[Any] | None:
        with db.connect() as conn:
            rows = conn.execute(text(
                "SELECT job_id::text, status::text, reason FROM jobs WHERE source_topic = :t "
                "OR job_id = ANY(CAST(:ids AS uuid[]))"), {"t": topic, "ids": ids}).all()
        have = {r[0] for r in rows}
        if len(rows) >= expect_records and have >= set(ids) and \
                all(r[1] in TERMINAL for r in rows):
            return rows
        return None

    try:
        rows = wait_for(settled, timeout_s, interval_s=1.0, what="every job terminal")
    except TimeoutError:
        with db.connect() as conn:
            left = conn.execute(text(
                "SELECT status::text, count(*) FROM jobs WHERE source_topic = :t "
                "OR job_id = ANY(CAST(:ids AS uuid[])) GROUP BY 1"), {"t": topic, "ids": ids}).all()
        raise AssertionError(f"not settled after {timeout_s}s: {dict(left)} "
                             f"(want {expect_records} terminal rows)") from None
    v = Verdict(recovered_s=time.monotonic() - t0, rows=len(rows))
    v.statuses = Counter(r[1] for r in rows)
    v.reasons = Counter(r[2] for r in rows if r[2])
    all_ids = [r[0] for r in rows]
    assert len(all_ids) == len(set(all_ids)) == expect_records, (len(all_ids), expect_records)
    with db.connect() as conn:
        res = conn.execute(text(
            "SELECT r.job_id::text, count(*), bool_and(j.status = 'succeeded') FROM results r "
            "JOIN jobs j USING (job_id) WHERE r.job_id = ANY(CAST(:ids AS uuid[])) GROUP BY 1"),
            {"ids": all_ids}).all()
    assert all(r[1] == 1 for r in res), "a job_id has two result rows"
    assert all(r[2] for r in res), "a result row for a job that is not succeeded"
    v.results = len(res)
    assert v.results == v.statuses["succeeded"], (v.results, v.statuses)
    with db.connect() as conn:
        executions = conn.execute(text(
            "SELECT attempts, count(*) FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[])) "
            "GROUP BY 1"), {"ids": all_ids}).all()
    v.executions = Counter({int(a): int(n) for a, n in executions})
    assert max(v.executions, default=0) <= max_executions, (
        f"a job ran {max(v.executions)} times (bound {max_executions}): {dict(v.executions)}")
    return v


def dlq_reasons(settings: Settings, min_count: int, timeout_s: float = 30.0) -> Counter:
    """Reasons (headers) of the records on the test's DLQ topic, once at least ``min_count``."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(settings.kafka.dlq_topic, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000, group_id=None,
                             **settings.kafka.client_options())
    got: list[Any] = []
    try:
        def enough() -> bool:
            got.extend(consumer)
            return len(got) >= min_count
        wait_for(enough, timeout_s, what=f"{min_count} DLQ records")
    finally:
        consumer.close()
    return Counter(dict(m.headers)["reason"].decode() for m in got)


def marker() -> str:
    return f"POISON-{uuid.uuid4().hex[:12]}"


def cut_tcp_connections(pid: int, port: int) -> int:
    """Abort every established TCP connection of process ``pid`` to ``port`` (``ss -K``, as a
    dropped network path would: the process sees its live connections die, not only a refused
    new one). Returns how many were cut."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    cut = 0
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        local = line.split()[2]
        sport = local.rsplit(":", 1)[1]
        subprocess.run(["ss", "-K", "dport", "=", str(port), "sport", "=", sport],
                       capture_output=True, check=False)
        cut += 1
    return cut
