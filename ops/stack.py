"""Start and stop agentq processes (bridge, Celery workers) as real subprocesses, each in its
own process group with a log file. Used by the demo, the benchmarks and the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    hostname: str = ""  # a Celery worker's node name (`celery inspect -d`, event hostnames)

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
    """Processes with a shared environment overlay and one log file each."""

    env: dict[str, str]
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}-{len(self.procs)}.log"
        env = {**os.environ, **self.env, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as out:
            popen = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def bridge(self, *args: str, extra_env: dict[str, str] | None = None) -> Proc:
        return self.start("bridge", [sys.executable, "-m", "cli.main", "bridge", *args],
                          extra_env)

    def worker(self, queues: str = "cpu", concurrency: int = 1, pool: str = "prefork",
               extra_env: dict[str, str] | None = None, name: str = "worker",
               args: tuple[str, ...] = ()) -> Proc:
        prefix = self.env.get("AGENTQ_QUEUE_PREFIX", os.environ.get("AGENTQ_QUEUE_PREFIX", ""))
        qs = ",".join(prefix + q for q in queues.split(","))
        node = f"{name}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        # --quiet: no start-up banner on stdout, so every line of the log is a log record.
        proc = self.start(name, [sys.executable, "-m", "celery", "-A", "workers.app", "--quiet",
                                 "worker",
                                 "-Q", qs, "-c", str(concurrency), "-P", pool,
                                 "--without-gossip", "--without-mingle", "--without-heartbeat",
                                 "-n", node, "-l", "WARNING", *args],
                          {"C_FORCE_ROOT": "1", **(extra_env or {})})
        proc.hostname = node
        return proc

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} (rc={p.popen.returncode})\n{p.log()[-4000:]}"
                         for p in self.procs)
