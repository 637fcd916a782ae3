"""Soak: a steady job stream while random faults from the matrix hit the system; reports
produced / succeeded / failed / rejected / expired, lost, duplicated (results of a job that is not
succeeded, or two result rows), executions per job (attempts: how often its inference ran) and max
attempts. The first two invariants must be 0.

Two shapes, one test:

* short (the default): ``AGENTQ_SOAK_S`` seconds (180) at 20 digits jobs/s, a fault every 8–16 s;
* at load: ``AGENTQ_SOAK_LOAD=0.5`` first measures the drain rate of this very stack (a backlog
  of ``AGENTQ_SOAK_DRAIN_JOBS``, 20,000 digits jobs, produced while no bridge reads it, then
  drained), then streams at that fraction of it (at least ``AGENTQ_SOAK_MIN_RATE``, 1,500 jobs/s)
  from a separate producer process, with one minilm-l6 job per ``AGENTQ_SOAK_MINILM_EVERY`` (200)
  digits jobs, poison jobs, duplicate job_ids and malformed records, and injects a fault every
  ``AGENTQ_SOAK_FAULT_EVERY_S`` (30) seconds.

Faults: SIGKILL of a bridge; SIGSTOP of a bridge past the Kafka session timeout (10 s against 6);
SIGKILL of a worker's main process (its pool processes and engine follow 3 s later, as a
container's end takes them); SIGKILL of one pool process; SIGKILL of the shared engine process of
the second worker; Kafka SIGKILL and restart; a Kafka blackhole longer than the session timeout
(the broker frozen with SIGSTOP for 10 s: every client's connections stay open and nothing answers,
which is what a dropped network path looks like to them; no packet filter is available on these
machines); Redis restart; PostgreSQL immediate restart.

``AGENTQ_SOAK_REPORT`` names a file the summary is written to (and ``.json`` beside it):
bench/results/soak.txt holds a short run, bench/results/soak-load.txt one at load.
Command for the latter: ``AGENTQ_SOAK_S=1800 AGENTQ_SOAK_LOAD=0.5
AGENTQ_SOAK_REPORT=bench/results/soak-load.txt python -m pytest -s -m slow
tests/faults/test_soak.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.faults.harness import (
    digits_jobs,
    marker,
    produce,
    restore_services,
    services_sh,
)
from tests.faults.stream import Produced
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.soak,
              pytest.mark.timeout(7200)]

KAFKA_PID = Path(os.environ.get("AGENTQ_HOME", "/var/tmp/agentq")) / "services/kafka/kafka.pid"

TERMINAL_SQL = text("SELECT count(*) FROM jobs WHERE source_topic = :t AND status IN "
                    "('succeeded', 'failed', 'rejected', 'expired')")
UNFINISHED_SQL = text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running') "
                      "AND source_topic = :t")
ROWS_SQL = text("SELECT count(*) FROM jobs WHERE source_topic = :t")
DRAIN_SQL = text("""
SELECT count(*) AS jobs, extract(epoch FROM max(finished_at) - min(received_at)) AS span_s
FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))
""")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of the direct children of ``pid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((int(d.name), (d / "cmdline").read_bytes().replace(b"\0", b" ")
                            .decode(errors="replace")))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _engine_pid(worker_pid: int) -> int | None:
    path = Path(tempfile.gettempdir()) / f"agentq-engine-{worker_pid}" / "engine.pid"
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def test_soak_with_random_faults(faulty, worker_db, restore, tmp_path):
    s = faulty.settings
    duration_s = float(_env("AGENTQ_SOAK_S", "180"))
    load = float(_env("AGENTQ_SOAK_LOAD", "0"))
    fault_every = float(_env("AGENTQ_SOAK_FAULT_EVERY_S", "30" if load else "0"))
    rng = random.Random(int(_env("AGENTQ_SOAK_SEED", "7")))
    tag = marker()
    env = {"AGENTQ_FAILPOINT": f"worker.item:{tag}:raise"}
    bridge_args = () if load else ("--max-batch", "16")
    shared = {**env, "AGENTQ_WORKER_ENGINE_MODE": "shared"}

    def start_worker(kind: str):
        return faulty.worker(concurrency=2, extra_env=shared if kind == "shared" else env,
                             name=f"worker-{kind}")

    workers = {"inprocess": start_worker("inprocess"), "shared": start_worker("shared")}
    bridges = [faulty.bridge(*bridge_args), faulty.bridge(*bridge_args)]
    meta: dict = {"duration_s": duration_s, "load": load, "workers": "2 × (-c 2): one with "
                  "in-process sessions, one with the shared engine process",
                  "bridges": 2, "lease_s": 15, "session_timeout_ms": 6000, "max_attempts": 3}

    ids: list[str] = []
    rate = 20
    if load:  # the drain rate of this very stack, measured before the soak
        n = int(_env("AGENTQ_SOAK_DRAIN_JOBS", "20000"))
        warm = digits_jobs(200)
        produce(s, warm)
        wait_for(lambda: _count(worker_db, ROWS_SQL, s.kafka.jobs_topic) >= len(warm) and
                 _count(worker_db, UNFINISHED_SQL, s.kafka.jobs_topic) == 0, 180,
                 what="the warm-up jobs")
        for b in bridges:
            b.stop()
        backlog = digits_jobs(n)
        produce(s, backlog)
        bridges = [faulty.bridge(*bridge_args), faulty.bridge(*bridge_args)]
        ids += [j.job_id for j in warm + backlog]
        wait_for(lambda: _count(worker_db, ROWS_SQL, s.kafka.jobs_topic) >= len(ids) and
                 _count(worker_db, UNFINISHED_SQL, s.kafka.jobs_topic) == 0, 600,
                 interval_s=0.5, what="the capacity drain")
        with worker_db.connect() as conn:
            d = conn.execute(DRAIN_SQL, {"ids": [j.job_id for j in backlog]}).one()
        drain = d.jobs / float(d.span_s)
        rate = max(int(_env("AGENTQ_SOAK_MIN_RATE", "1500")), int(load * drain))
        meta.update(drain_jobs=n, drain_jobs_per_s=round(drain, 1), rate_jobs_per_s=rate)
        print(f"[soak] drain {drain:.0f} jobs/s → stream {rate} jobs/s", flush=True)

    def kill_bridge():
        b = bridges.pop(rng.randrange(len(bridges)))
        b.signal(signal.SIGKILL)
        b.popen.wait(10)
        bridges.append(faulty.bridge(*bridge_args))

    def stop_bridge():
        b = rng.choice(bridges)
        b.signal(signal.SIGSTOP)
        try:
            time.sleep(10)
        finally:
            b.signal(signal.SIGCONT)

    def kill_worker_main():
        kind = rng.choice(sorted(workers))
        w = workers[kind]
        os.kill(w.popen.pid, signal.SIGKILL)
        w.popen.wait(10)
        time.sleep(3)
        try:  # what is left of its group
            os.killpg(w.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        workers[kind] = start_worker(kind)

    def kill_worker_child():
        w = workers[rng.choice(sorted(workers))]
        pool = [p for p, cmd in _children(w.popen.pid) if "engine.server" not in cmd]
        if pool:
            os.kill(rng.choice(pool), signal.SIGKILL)

    def kill_engine():
        pid = _engine_pid(workers["shared"].popen.pid)
        if pid:
            os.kill(pid, signal.SIGKILL)

    def restart(*args):
        def go():
            try:
                services_sh(*args)
            finally:
                restore_services()
        return go

    def kill_kafka():
        try:
            services_sh("kill", "kafka")
            time.sleep(2)
        finally:
            restore_services()

    def blackhole_kafka():
        pid = int(KAFKA_PID.read_text().split()[0])
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(10)
        finally:
            os.kill(pid, signal.SIGCONT)

    faults = {"bridge_sigkill": kill_bridge, "bridge_sigstop": stop_bridge,
              "worker_main_sigkill": kill_worker_main, "worker_child_sigkill": kill_worker_child,
              "engine_sigkill": kill_engine, "kafka_sigkill": kill_kafka,
              "kafka_blackhole": blackhole_kafka, "redis_restart": restart("restart", "redis"),
              "postgres_restart_immediate": restart("restart", "postgres", "--immediate")}
    injected: Counter = Counter()
    restarted: list[str] = []
    in_flight: list[int] = []

    def supervise():
        """Restart what exited on its own, as compose's `restart: unless-stopped` does."""
        for kind, w in list(workers.items()):
            if not w.alive():
                restarted.append(f"{w.name} rc={w.popen.returncode}")
                workers[kind] = start_worker(kind)
        for b in list(bridges):
            if not b.alive():
                restarted.append(f"bridge rc={b.popen.returncode}")
                bridges.remove(b)
                bridges.append(faulty.bridge(*bridge_args))

    out = tmp_path / "stream.txt"
    acked = _Acked(out, base=len(ids))

    def unfinished() -> int:
        """Work in flight right before a fault: jobs queued or running in the ledger, polled up
        to 3 s until there are some (the stream arrives in chunks of 0.1 s, which the pipeline
        may have finished a moment ago); if none showed, records the producer had acknowledged
        that are not terminal yet (still in Kafka: no ledger row)."""
        end = time.monotonic() + 3
        while time.monotonic() < end:
            n = _count(worker_db, UNFINISHED_SQL, s.kafka.jobs_topic)
            if n > 0:
                return n
            time.sleep(0.05)
        return acked.count() - _count(worker_db, TERMINAL_SQL, s.kafka.jobs_topic)
    argv = [sys.executable, "-m", "tests.faults.stream", "--rate", str(rate),
            "--poison-tag", tag, "--out", str(out)]
    if load:
        argv += ["--minilm-every", _env("AGENTQ_SOAK_MINILM_EVERY", "200")]
    # the stream runs in its own process: a Kafka client that lives through a broker kill
    # leaks sockets (kafka-python), which must not end up in the test process
    stream_proc = faulty.start("stream", argv)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < duration_s:
            if fault_every:
                next_at = t0 + fault_every * (sum(injected.values()) + 1)
                time.sleep(max(0.0, next_at - time.monotonic()))
            else:
                time.sleep(rng.uniform(8, 16))
            if time.monotonic() - t0 >= duration_s:
                break
            name = rng.choice(sorted(faults))
            try:
                in_flight.append(unfinished())
            except Exception:  # PostgreSQL may still be coming back from the last fault
                pass
            print(f"[soak t={time.monotonic() - t0:5.0f}s] fault: {name} "
                  f"(unfinished: {in_flight[-1] if in_flight else '?'})", flush=True)
            faults[name]()
            injected[name] += 1
            time.sleep(1)
            supervise()
    finally:
        stream_proc.signal(signal.SIGTERM)
        stream_proc.popen.wait(120)
    produced_s = time.monotonic() - t0
    stream = Produced.read(out)

    ids = list(dict.fromkeys(ids + stream.job_ids))
    expect = len(ids) + stream.bad

    def settled():
        supervise()
        try:
            return (_count(worker_db, ROWS_SQL, s.kafka.jobs_topic) >= expect and
                    _count(worker_db, UNFINISHED_SQL, s.kafka.jobs_topic) == 0)
        except Exception:
            return False

    t1 = time.monotonic()
    try:
        wait_for(settled, max(300.0, duration_s / 3), interval_s=2, what="the soak backlog")
    except TimeoutError:
        pass  # reported as lost below
    settle_s = time.monotonic() - t1
    with worker_db.connect() as conn:
        counts = Counter(dict(conn.execute(text(
            "SELECT status::text, count(*) FROM jobs WHERE source_topic = :t GROUP BY 1"),
            {"t": s.kafka.jobs_topic}).all()))
        terminal: set[str] = set()
        res = conn.execution_options(stream_results=True, yield_per=50000).execute(text(
            "SELECT job_id::text FROM jobs WHERE source_topic = :t AND status IN "
            "('succeeded', 'failed', 'rejected', 'expired')"), {"t": s.kafka.jobs_topic})
        for part in res.partitions():
            terminal.update(r[0] for r in part)
    lost = sum(1 for i in ids if i not in terminal)
    with worker_db.connect() as conn:
        dup_results = conn.execute(text(
            "SELECT count(*) FROM (SELECT r.job_id FROM results r JOIN jobs j USING (job_id) "
            "WHERE j.source_topic = :t GROUP BY r.job_id HAVING count(*) > 1 "
            "OR bool_or(j.status <> 'succeeded')) x"), {"t": s.kafka.jobs_topic}).scalar_one()
        executions = Counter({int(a): int(n) for a, n in conn.execute(text(
            "SELECT attempts, count(*) FROM jobs WHERE source_topic = :t GROUP BY 1"),
            {"t": s.kafka.jobs_topic}).all()})
        models = dict(conn.execute(text(
            "SELECT model, count(*) FROM jobs WHERE source_topic = :t AND status = 'succeeded' "
            "GROUP BY 1"), {"t": s.kafka.jobs_topic}).all())
    offered = len(stream.job_ids) / produced_s
    summary = "\n".join([
        f"soak: {produced_s:.0f}s of traffic with random faults, then {settle_s:.0f}s to settle",
        *([f"capacity measured at the start: {meta['drain_jobs_per_s']:.0f} jobs/s "
           f"(drain of {meta['drain_jobs']} digits jobs); stream target {rate} jobs/s"]
          if load else [f"stream target {rate} jobs/s"]),
        f"offered: {offered:.0f} jobs/s on average over the traffic phase",
        f"faults injected: {dict(sorted(injected.items()))}",
        f"unfinished jobs when a fault hit: min {min(in_flight, default=0)}, "
        f"median {sorted(in_flight)[len(in_flight) // 2] if in_flight else 0}",
        f"processes that exited on their own and were restarted (supervisor): "
        f"{restarted or 'none'}",
        f"records produced: {stream.records + len(ids) - len(set(stream.job_ids))} "
        f"({len(ids)} distinct jobs, {stream.records - len(stream.job_ids) - stream.bad} "
        f"duplicate job_ids, {stream.bad} malformed, {len(stream.poison)} poison; "
        f"{stream.send_errors} producer send retries)",
        f"succeeded: {counts['succeeded']} (by model: {models})",
        f"failed: {counts['failed']} (poison jobs: {len(stream.poison)})",
        f"rejected: {counts['rejected']}",
        f"expired: {counts['expired']}",
        f"lost: {lost}",
        f"duplicated (two result rows, or a result for a job not succeeded): {dup_results}",
        f"executions per job (attempts → jobs): {dict(sorted(executions.items()))}",
        f"max attempts of any job: {max(executions, default=0)}",
    ])
    print("\n" + summary, flush=True)
    report = os.environ.get("AGENTQ_SOAK_REPORT")
    if report:
        Path(report).write_text(summary + "\n")
        Path(report).with_suffix(".json").write_text(json.dumps({
            **meta, "traffic_s": round(produced_s), "settle_s": round(settle_s),
            "offered_jobs_per_s": round(offered, 1), "faults": dict(sorted(injected.items())),
            "unfinished_at_fault": in_flight, "restarted": restarted,
            "distinct_jobs": len(ids), "malformed": stream.bad, "poison": len(stream.poison),
            "statuses": dict(counts), "succeeded_by_model": models, "lost": lost,
            "duplicated": dup_results, "executions": dict(sorted(executions.items())),
            "max_attempts": max(executions, default=0)}, indent=2) + "\n")
    assert lost == 0, faulty.logs()
    assert dup_results == 0
    assert counts["failed"] == len(stream.poison)
    assert counts["rejected"] == stream.bad
    if load:  # at 20 jobs/s a job is done in milliseconds: only a stream at load is always busy
        assert min(in_flight, default=1) > 0, "a fault hit a system with no work in flight"


class _Acked:
    """Distinct ledger rows the stream's acknowledged records will make (jobs and malformed
    records; a duplicate job_id adds none), read incrementally from the stream's file."""

    def __init__(self, path: Path, base: int = 0) -> None:
        self.path, self.n, self.pos, self.rest = path, base, 0, b""

    def count(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                data = self.rest + f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            return self.n
        lines = data.split(b"\n")
        self.rest = lines.pop()
        self.n += sum(1 for line in lines if line[:4] in (b"job ", b"pois", b"bad"))
        return self.n


def _count(db, sql, topic: str) -> int:
    with db.connect() as conn:
        return int(conn.execute(sql, {"t": topic}).scalar_one())
