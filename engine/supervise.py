"""Who starts and supervises the engine process: the pool processes themselves, under a file lock.

The first client that finds no live engine in its run directory takes ``engine.lock``, starts
``python -m engine.server`` (a fresh interpreter, so no CUDA state is ever inherited through a
fork), waits for its socket and releases the lock; the others wait on the lock and connect.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from agentq.config import EngineOptions, WorkerSettings
from agentq.log import get_logger
from engine.errors import EngineUnavailable
from engine.protocol import options_json, recv_msg, send_msg, socket_path, worker_json

log = get_logger("agentq.engine_client")

_SPAWNED: set[int] = set()  # engine processes started by this process, reaped when they exit
Conn = tuple[socket.socket, dict[str, Any]]


def _try_connect(path: Path, timeout_s: float) -> Conn | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
        send_msg(sock, {"op": "hello", "pid": os.getpid()})
        hello = recv_msg(sock)
        if hello.get("ok"):
            return sock, hello
    except (OSError, ValueError):
        pass
    sock.close()
    return None



def ensure_engine(opts: EngineOptions, worker: WorkerSettings,
                  env: dict[str, str] | None = None) -> Conn:
    """Connect to the live engine of ``opts.run_dir``, starting one under the lock if none."""
    assert opts.run_dir is not None
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    path = socket_path(opts)
    conn = _try_connect(path, opts.request_timeout_s)
    if conn is not None:
        return conn
    with open(opts.run_dir / "engine.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if we die holding it
        conn = _try_connect(path, opts.request_timeout_s)
        if conn is not None:
            return conn
        # posix_spawn: a fresh interpreter (fork+exec), never a fork of this process's state.
        pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "engine.server",
                                              "--options", options_json(opts),
                                              "--worker", worker_json(worker)],
                             os.environ if env is None else env)
        _SPAWNED.add(pid)
        log.warning("engine_starting", engine_pid=pid, run_dir=str(opts.run_dir))
        end = time.monotonic() + opts.start_timeout_s
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _SPAWNED.discard(pid)
                raise EngineUnavailable(f"engine process exited with status {status} at start")
            conn = _try_connect(path, opts.request_timeout_s)
            if conn is not None:
                return conn
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _SPAWNED.discard(pid)
        raise EngineUnavailable(f"engine did not start within {opts.start_timeout_s}s")


def _reap() -> None:
    """Collect engine processes this process started that have exited (no zombies)."""
    for pid in list(_SPAWNED):
        try:
            done = os.waitpid(pid, os.WNOHANG)[0]
        except ChildProcessError:
            done = pid
        if done:
            _SPAWNED.discard(pid)
