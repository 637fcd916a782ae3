"""Per-stage CPU budget of the whole pipeline: µs of CPU per job, by process and by stage.

`python -m bench.stage_budget --jobs 60000 [--model M] [--py-spy PATH]` pre-loads a backlog of
one model's jobs (digits-mlp by default; a text model gets ``bench.workload``'s mixed-length
texts, as in `agentq bench e2e`), starts a
bridge and a worker (as `agentq bench e2e` does), and while they drain it reads every process's
CPU time from /proc: the bridge, the worker (main process, pool children, engine), PostgreSQL
(every backend), Redis and the Kafka broker. The producer's own CPU (this process) is measured
while it pre-loads. With ``--py-spy`` (a py-spy binary; not a project dependency), a second
drain samples the bridge and the worker children and files each sample under a stage by the
frames it holds (``STAGES``); the sample shares split the first, unsampled drain's CPU per
process into Kafka fetch, decode and validate, batching, ledger write, Celery publish, offset
commit (bridge) and task decode, claim, inference, result write (worker). Writes
``bench/results/stage-budget.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import text

from agentq.config import Settings
from bench.workload import isolated, make_jobs, wait
from ops.stack import Stack
from producers.cli import produce
from producers.topics import ensure_topics
from storage.db import make_engine

RESULTS = Path(__file__).resolve().parent / "results"
TICK = os.sysconf("SC_CLK_TCK")

# (stage, regex over a sample's frames joined root → leaf); the first that matches wins, so the
# specific ones (a ledger write under dispatch) come before the general ones.
STAGES: dict[str, list[tuple[str, str]]] = {
    "bridge": [
        ("ledger write", r"queue_jobs|insert_jobs|write_isolating|_write_rejects"),
        ("celery publish", r"publish \(workers/queues\.py|kombu|redis/"),
        ("decode + validate", r"parse_record|validate_message|contract\.py"),
        ("offset commit", r"commit \(bridge/consumer\.py|offsets\.py"),
        ("batching + assembly", r"batcher\.py|buckets\.py|workers/batch\.py|dispatch \(bridge/"
                                r"consumer\.py|_accept \(bridge/consumer\.py"),
        ("backpressure + vitals", r"apply_backpressure|vitals\.py|routing\.py|inflight\.py"),
        ("kafka fetch", r"poll \(kafka/|kafka/"),
    ],
    "worker": [
        ("inference", r"onnxruntime|engine/sessions\.py|engine/client\.py|_infer \(workers/"),
        ("claim (running)", r"claim_batch|count_attempt|expire_jobs"),
        ("result + status write", r"_land \(workers/|finish_jobs|insert_results"),
        ("pre/post-process", r"prepare|results \(models/|handler"),
        ("metrics", r"agentq/metrics\.py"),
        ("task decode", r"from_payload|json/|kombu/serialization|loads"),
        ("celery + kombu", r"celery/|kombu/|billiard/|redis/"),
    ],
}


# -- /proc CPU accounting --------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(p.name))
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def by_cmdline(pattern: str) -> list[int]:
    rx = re.compile(pattern)
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if rx.search(cmd):
                pids.append(int(p.name))
    return pids


def snapshot(groups: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    """CPU seconds so far of every process of every group, by pid."""
    return {name: {p: cpu_s(p) for p in pids} for name, pids in groups.items()}


def spent(c0: dict[str, dict[int, float]], c1: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds each group spent between two snapshots; a process that appeared in between
    (a new PostgreSQL backend, a restarted pool process) counts from 0."""
    return {name: sum(cpu - c0.get(name, {}).get(p, 0.0) for p, cpu in c1[name].items())
            for name in c1}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    total = sum(f[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return (total - idle) / TICK, total / TICK


# -- py-spy samples → stages -------------------------------------------------------------------
def classify(raw: Path, rules: list[tuple[str, str]]) -> Counter:
    """Samples per stage from py-spy's raw (collapsed) output: ``frame;frame;... count``."""
    compiled = [(stage, re.compile(rx)) for stage, rx in rules]
    out: Counter = Counter()
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stage = next((s for s, rx in compiled if rx.search(stack)), "other")
        out[stage] += int(count)
    return out


def spy(py_spy: str, pid: int, out: Path, subprocesses: bool = False) -> subprocess.Popen:
    argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
            "--nonblocking", "--output", str(out)]
    if subprocesses:
        argv.append("--subprocesses")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- the run -----------------------------------------------------------------------------------
def run(settings: Settings, jobs: int, workers: int, py_spy: str | None,
        timeout_s: float, bridges: int = 1, model: str = "digits-mlp") -> dict[str, Any]:
    s, env = isolated(settings, uuid.uuid4().hex[:8])
    ensure_topics(s.kafka)
    db = make_engine(s.worker_database_url, pool_size=2, app_name="agentq-bench-budget")
    log_dir = Path(tempfile.mkdtemp(prefix="agentq-budget-"))
    stack = Stack(env=env, log_dir=log_dir)
    topic = s.kafka.jobs_topic

    # One connection polls progress, and its backend's CPU is left out of PostgreSQL's: the
    # counts are the benchmark's own load (a scan of the topic's rows every 0.2 s was ~25% of
    # the PostgreSQL CPU of a 30,000-job drain), not the pipeline's.
    poll = db.connect().execution_options(isolation_level="AUTOCOMMIT")
    poll_pid = int(poll.execute(text("SELECT pg_backend_pid()")).scalar_one())
    # No parallel workers for the progress counts: each would be a forked backend this script's
    # accounting could not leave out (measured: 3 forks/s and ~100 µs/job unattributed)
    poll.execute(text("SET max_parallel_workers_per_gather = 0"))

    def count(where: str = "") -> int:
        return int(poll.execute(text(f"SELECT count(*) FROM jobs WHERE source_topic = :t "
                                     f"{where}"), {"t": topic}).scalar_one())

    try:
        worker = stack.worker(concurrency=workers)
        bridge = stack.bridge()
        produce(s, make_jobs(model, 200, seed=1), 200, quiet=True)  # warm-up
        deadline = time.monotonic() + timeout_s

        def until(counter: Any, total: int, label: str, interval_s: float) -> None:
            wait(counter, total, label, deadline - time.monotonic(), stack, interval_s)

        until(lambda: count("AND status = 'succeeded'"), 200, "warm-up", 0.2)
        bridge.stop()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        produced = produce(s, make_jobs(model, jobs, seed=2), jobs)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        producer_cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        started = [stack.bridge() for _ in range(bridges)]
        bridge = started[0]
        base = count()
        # the bridge's start-up (imports, group join) is not counted: measure from its first row
        until(count, base + 1, "bridge start", 0.02)
        if bridges > 1:  # and with several, from when the group has settled on all of them
            time.sleep(3)

        def groups() -> dict[str, list[int]]:  # found again at the end: new backends count
            return {
                "bridge": [p for b in started for p in (b.popen.pid, *descendants(b.popen.pid))],
                "worker": [worker.popen.pid, *descendants(worker.popen.pid)],
                "postgres": [p for p in by_cmdline(r"^postgres") if p != poll_pid],
                "redis": by_cmdline(r"redis-server"),
                "kafka": by_cmdline(r"kafka\.Kafka"),
            }
        spies: dict[str, tuple[subprocess.Popen, Path]] = {}
        if py_spy:
            for name, pid, sub in (("bridge", bridge.popen.pid, False),
                                   ("worker", worker.popen.pid, True)):
                out = log_dir / f"{name}.spy"
                spies[name] = (spy(py_spy, pid, out, sub), out)

        def done() -> int:
            return count("AND status IN ('succeeded','failed','rejected','expired')")

        w0 = time.time()
        c0, m0, done0 = snapshot(groups()), machine_cpu(), done()
        total = base + jobs  # base holds the warm-up rows
        until(done, total, "drain", 0.2)
        c1, m1 = snapshot(groups()), machine_cpu()
        last = float(poll.execute(text("SELECT extract(epoch FROM max(finished_at)) FROM jobs "
                                       "WHERE source_topic = :t"), {"t": topic}).scalar_one())
        for proc, _ in spies.values():
            proc.send_signal(signal.SIGINT)
        for proc, _ in spies.values():
            proc.wait(60)
        drained = total - done0  # what ended inside the measured window (a settle included)
    finally:
        stack.stop_all()
        poll.close()
        db.dispose()
    wall = max(1e-3, last - w0)  # to the last job's finish in the ledger, not the poll's
    used = spent(c0, c1)
    per_job = {k: round(v * 1e6 / drained, 1) for k, v in used.items()}
    busy, total_cpu = m1[0] - m0[0], m1[1] - m0[1]
    res: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "loadavg_end": os.getloadavg(), "jobs": drained, "drain_s": round(wall, 2),
        "jobs_per_s": round(drained / wall, 1), "model": model, "workers": workers,
        "bridges": bridges,
        "cpu_us_per_job": {**per_job, "producer": round(producer_cpu * 1e6 / jobs, 1)},
        "cpu_share_of_2_cores": {k: round(v / wall / 2, 3) for k, v in used.items()},
        # the whole machine in the window: how busy, and how much of it no group accounts for
        # (the kernel's loopback networking, this script's polling, anything else running)
        "machine_busy_share": round(busy / total_cpu, 3) if total_cpu else None,
        "machine_cpu_us_per_job": round(busy * 1e6 / drained, 1),
        "unattributed_cpu_us_per_job": round((busy - sum(used.values())) * 1e6 / drained, 1),
        "produce": produced, "logs": str(log_dir)}
    if spies:
        res["samples"] = {name: dict(classify(out, STAGES[name]).most_common())
                          for name, (_, out) in spies.items()}
    return res


def split(totals: dict[str, float], samples: dict[str, dict[str, int]]
          ) -> dict[str, dict[str, float]]:
    """A process's CPU per job (from an unsampled drain) split by its stages' sample shares."""
    out = {}
    for name, counts in samples.items():
        n = sum(counts.values()) or 1
        out[name] = {stage: round(totals[name] * c / n, 1) for stage, c in counts.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.stage_budget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=60_000)
    p.add_argument("--model", default="digits-mlp", help="whose jobs make the backlog")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--bridges", type=int, default=1, help="bridges in the consumer group")
    p.add_argument("--py-spy", default=os.environ.get("AGENTQ_PY_SPY"),
                   help="a py-spy binary: split the bridge and worker CPU into stages")
    p.add_argument("--timeout-s", type=float, default=600)
    p.add_argument("--out", type=Path, default=RESULTS / "stage-budget.json")
    p.add_argument("--label", default="", help="stored with the result (e.g. before/after)")
    args = p.parse_args(argv)
    start_load = os.getloadavg()
    settings = Settings.from_env()
    # Sampling slows the sampled processes (measured: the bridge 80 → 130 µs/job under py-spy),
    # so the CPU totals come from a drain without it and the samples only give the shares.
    res = run(settings, args.jobs, args.workers, None, args.timeout_s, args.bridges, args.model)
    if args.py_spy:
        sampled = run(settings, args.jobs, args.workers, args.py_spy, args.timeout_s,
                      args.bridges, args.model)
        res["stages_us_per_job"] = split(res["cpu_us_per_job"], sampled["samples"])
        res["sampled_run"] = {k: sampled[k] for k in ("jobs_per_s", "cpu_us_per_job", "samples")}
    res["label"] = args.label
    res["loadavg_start"] = start_load
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
