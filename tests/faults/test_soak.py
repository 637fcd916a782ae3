"""Soak: a steady job stream for a few minutes while random faults from the matrix hit the
system; prints produced / succeeded / failed / rejected / lost / duplicated (the last two must
be 0). ``AGENTQ_SOAK_S`` sets the length (default 180 s); ``AGENTQ_SOAK_REPORT`` a file the
summary is also written to (bench/results/soak.txt holds one run)."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.faults.harness import TERMINAL, marker, restore_services, services_sh
from tests.faults.stream import Produced
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.soak,
              pytest.mark.timeout(1800)]


def test_soak_with_random_faults(faulty, worker_db, restore, tmp_path):
    s = faulty.settings
    duration_s = float(os.environ.get("AGENTQ_SOAK_S", "180"))
    rng = random.Random(int(os.environ.get("AGENTQ_SOAK_SEED", "7")))
    tag = marker()
    env = {"AGENTQ_FAILPOINT": f"worker.item:{tag}:raise"}
    workers = [faulty.worker(concurrency=2, extra_env=env)]
    bridges = [faulty.bridge("--max-batch", "16"), faulty.bridge("--max-batch", "16")]

    def kill_bridge():
        b = bridges.pop(rng.randrange(len(bridges)))
        b.signal(signal.SIGKILL)
        b.popen.wait(10)
        bridges.append(faulty.bridge("--max-batch", "16"))

    def kill_worker():
        w = workers.pop()
        w.signal(signal.SIGKILL)
        w.popen.wait(10)
        time.sleep(2)
        workers.append(faulty.worker(concurrency=2, extra_env=env))

    def stop_bridge():
        b = rng.choice(bridges)
        b.signal(signal.SIGSTOP)
        try:
            time.sleep(10)
        finally:
            b.signal(signal.SIGCONT)

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

    faults = {"bridge_sigkill": kill_bridge, "worker_sigkill": kill_worker,
              "bridge_sigstop": stop_bridge, "redis_restart": restart("restart", "redis"),
              "postgres_restart_immediate": restart("restart", "postgres", "--immediate"),
              "kafka_sigkill": kill_kafka}
    injected: Counter = Counter()
    restarted: list[str] = []

    def supervise():
        """Restart what exited on its own, as compose's `restart: unless-stopped` does."""
        for procs, start in ((workers, lambda: faulty.worker(concurrency=2, extra_env=env)),
                             (bridges, lambda: faulty.bridge("--max-batch", "16"))):
            for p in list(procs):
                if not p.alive():
                    restarted.append(f"{p.name} rc={p.popen.returncode}")
                    procs.remove(p)
                    procs.append(start())
    out = tmp_path / "stream.txt"
    # the stream runs in its own process: a Kafka client that lives through a broker kill
    # leaks sockets (kafka-python), which must not end up in the test process
    stream_proc = faulty.start("stream", [sys.executable, "-m", "tests.faults.stream",
                                          "--rate", "20", "--poison-tag", tag, "--out", str(out)])
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < duration_s:
            time.sleep(rng.uniform(8, 16))
            name = rng.choice(sorted(faults))
            print(f"[soak t={time.monotonic() - t0:5.0f}s] fault: {name}", flush=True)
            faults[name]()
            injected[name] += 1
            time.sleep(1)
            supervise()
    finally:
        stream_proc.signal(signal.SIGTERM)
        stream_proc.popen.wait(120)
    produced_s = time.monotonic() - t0
    stream = Produced.read(out)

    ids = list(dict.fromkeys(stream.job_ids))
    expect = len(ids) + stream.bad

    def settled():
        with worker_db.connect() as conn:
            rows = conn.execute(text("SELECT job_id::text, status::text FROM jobs WHERE "
                                     "source_topic = :t"), {"t": s.kafka.jobs_topic}).all()
        done = {r[0] for r in rows if r[1] in TERMINAL}
        return rows if len(done) >= expect and done >= set(ids) else None

    t1 = time.monotonic()

    def settled_supervised():
        supervise()
        return settled()

    try:
        rows = wait_for(settled_supervised, 300, interval_s=2, what="the soak backlog")
    except TimeoutError:
        with worker_db.connect() as conn:
            rows = conn.execute(text("SELECT job_id::text, status::text FROM jobs WHERE "
                                     "source_topic = :t"), {"t": s.kafka.jobs_topic}).all()
    settle_s = time.monotonic() - t1
    status = dict(rows)
    counts = Counter(status.values())
    lost = sum(1 for i in ids if status.get(i) not in TERMINAL)
    with worker_db.connect() as conn:
        dup_results = conn.execute(text(
            "SELECT count(*) FROM (SELECT r.job_id FROM results r JOIN jobs j USING (job_id) "
            "WHERE j.source_topic = :t GROUP BY r.job_id HAVING count(*) > 1 "
            "OR bool_or(j.status <> 'succeeded')) x"), {"t": s.kafka.jobs_topic}).scalar_one()
        attempts = conn.execute(text(
            "SELECT max(attempts) FROM jobs WHERE source_topic = :t"),
            {"t": s.kafka.jobs_topic}).scalar_one()
    summary = "\n".join([
        f"soak: {produced_s:.0f}s of traffic with random faults, then {settle_s:.0f}s to settle",
        f"faults injected: {dict(sorted(injected.items()))}",
        f"processes that exited on their own and were restarted (supervisor): "
        f"{restarted or 'none'}",
        f"records produced: {stream.records} ({len(ids)} distinct jobs, "
        f"{stream.records - len(ids) - stream.bad} duplicate job_ids, {stream.bad} malformed, "
        f"{len(stream.poison)} poison; {stream.send_errors} producer send retries)",
        f"succeeded: {counts['succeeded']}",
        f"failed: {counts['failed']} (poison jobs: {len(stream.poison)})",
        f"rejected: {counts['rejected']}",
        f"expired: {counts['expired']}",
        f"lost: {lost}",
        f"duplicated: {dup_results}",
        f"max attempts of any job: {attempts}",
    ])
    print("\n" + summary, flush=True)
    report = os.environ.get("AGENTQ_SOAK_REPORT")
    if report:
        Path(report).write_text(summary + "\n")
    assert lost == 0, faulty.logs()
    assert dup_results == 0
    assert counts["failed"] == len(stream.poison)
    assert counts["rejected"] == stream.bad
