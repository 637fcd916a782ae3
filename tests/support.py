"""Helpers for integration tests: live-service probes, subprocess stacks, ledger polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import text

from agentq.config import Settings

REPO = Path(__file__).resolve().parent.parent


def port_open(hostport: str, timeout: float = 1.0) -> bool:
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(pred: Callable[[], Any], timeout_s: float, interval_s: float = 0.2,
             what: str = "condition") -> Any:
    end = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def isolated_settings(base: Settings, name: str) -> tuple[Settings, dict[str, str]]:
    """Settings and env for one test: own topic, DLQ, consumer group and Celery queues."""
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    kafka = replace(base.kafka, jobs_topic=f"agentq.test.{tag}",
                    dlq_topic=f"agentq.test.{tag}.dlq", group_id=f"agentq-test-{tag}")
    s = replace(base, kafka=kafka, queue_prefix=f"t{tag}.")
    env = {
        "AGENTQ_KAFKA_JOBS_TOPIC": kafka.jobs_topic,
        "AGENTQ_KAFKA_DLQ_TOPIC": kafka.dlq_topic,
        "AGENTQ_KAFKA_GROUP_ID": kafka.group_id,
        "AGENTQ_QUEUE_PREFIX": s.queue_prefix,
    }
    return s, env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Stack:
    """Processes of one test (bridge, workers) with their own environment and logs."""

    env: dict[str, str]
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Proc:
        log_path = self.log_dir / f"{name}-{len(self.procs)}.log"
        env = {**os.environ, **self.env, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as out:
            popen = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def bridge(self, *args: str, extra_env: dict[str, str] | None = None) -> Proc:
        return self.start("bridge", [sys.executable, "-m", "agentq.cli", "bridge", *args],
                          extra_env)

    def worker(self, queues: str = "cpu", concurrency: int = 1, pool: str = "prefork",
               extra_env: dict[str, str] | None = None, name: str = "worker") -> Proc:
        prefix = self.env.get("AGENTQ_QUEUE_PREFIX", "")
        qs = ",".join(prefix + q for q in queues.split(","))
        return self.start(name, [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
                                 "-Q", qs, "-c", str(concurrency), "-P", pool,
                                 "--without-gossip", "--without-mingle", "--without-heartbeat",
                                 "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h", "-l", "WARNING"],
                          extra_env)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} (rc={p.popen.returncode})\n{p.log()[-4000:]}"
                         for p in self.procs)


def ledger_status(engine: Any, job_ids: Iterable[str]) -> dict[str, str]:
    ids = list(job_ids)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT job_id::text, status::text FROM jobs "
                                 "WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids})
        return {r[0]: r[1] for r in rows}


def wait_terminal(engine: Any, job_ids: Iterable[str], timeout_s: float = 120.0) -> dict[str, str]:
    ids = list(job_ids)
    terminal = {"succeeded", "failed", "rejected", "expired"}

    def done() -> dict[str, str] | None:
        st = ledger_status(engine, ids)
        if len(st) == len(ids) and all(v in terminal for v in st.values()):
            return st
        return None

    return wait_for(done, timeout_s, interval_s=0.5, what=f"{len(ids)} jobs to finish")


def rows_for_source(engine: Any, topic: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        res = conn.execute(text("SELECT * FROM jobs WHERE source_topic = :t ORDER BY "
                                "source_partition, source_offset"), {"t": topic})
        return [dict(r._mapping) for r in res]
