"""What a pool process uses in ``engine_mode=shared``: the same ``run(model, feeds)`` as
``InferenceEngine``, served by the per-device engine process (``workers.engine_server``).

Who starts and supervises the engine: the pool processes themselves, under a file lock. The first
client that finds no live engine in its run directory (``<tmp>/agentq-engine-<celery main pid>``)
takes ``engine.lock``, starts ``python -m workers.engine_server`` (a fresh interpreter, so no CUDA
state is ever inherited through a fork), waits for its socket and releases the lock; the others
wait on the lock and connect. When a client sees the engine die (EOF, reset, timeout), it restarts
it the same way and retries the request once on the new engine; if the engine cannot come back it
raises ``EngineUnavailable`` (retryable: the task gives the jobs back and retries with backoff).
The engine exits when the Celery main process (``watch_pid``) is gone, on SIGTERM (Celery's
process group), or when killed; its stale slab is removed at the next start.

Wire: a unix socket, 4-byte big-endian length + UTF-8 JSON per message; tensors never cross it,
only slot ids, offsets, shapes and dtypes. Inputs are written once into a slot of the shared slab;
the engine reads them as views and writes outputs into the same slot; the client copies the (small)
outputs out and frees the slot before ``run`` returns, so callers never hold slots. A reply is read
with one ``recv`` (length and body together).

Measured (``agentq bench shm`` → bench/results/shm.json; 2 vCPUs shared with other work, 1-minute
load 3.6-7.5, so single runs swing ±20 %; medians of interleaved runs):

- transport, shared memory vs pickling over a pipe: 7.1x faster at 1 MiB, 13x at 4 MiB, 37x at
  16 MiB, 18x at 64 MiB (1.8x at 4 KiB, where the message dominates).
- one request's overhead (digits-mlp, 1 row): ~140 µs vs ~10 µs in-process; of that ~10 µs is the
  kernel's socket round trip, the rest Python on both sides and two cross-process wake-ups on a
  busy machine. A client busy-poll (50-300 µs) made it slower here (it takes the core the engine
  needs), so the client blocks.
- worker path (prepare → run → results, 2 processes, bridge batch sizes): digits-mlp 0.79x
  in-process (the hop costs ~0.3-1 ms per 256-row batch against ~3 ms of CPU work); minilm-l6
  1.9x (one shared copy of the weights and two runner threads vs two processes each with its own
  session; the in-process rounds were also hit harder by the background load).
- end to end, Kafka → bridge → Celery worker (2 pool processes) → engine → Postgres, 9-10 drains
  per mode: digits-mlp 2,570 → 3,064 jobs/s (1.19x medians, 1.20x median of paired runs),
  minilm-l6 152 → 155 jobs/s (1.02x medians, 0.94x paired). The two runs disagreed (digits 0.95x
  in one, 1.38x in the other): on a shared 2-CPU host the engine and in-process sessions are
  within noise of each other end to end.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from agentq.config import WorkerSettings
from agentq.log import get_logger
from workers.errors import EngineUnavailable, FatalError, WorkerError
from workers.shm import SHM_DIR, NoFreeSlot, Slab, pid_alive, proc_start_time

log = get_logger("agentq.engine_client")

_LEN = struct.Struct(">I")
MAX_FRAME = 1 << 20
_RECV_BYTES = 1 << 16
_SPAWNED: set[int] = set()  # engine processes started by this process, reaped when they exit


class EngineInferenceError(FatalError):
    """The engine ran the request and ONNX Runtime rejected it (a bad input)."""


@dataclass(frozen=True)
class EngineOptions:
    """Knobs of the shared engine; every default documented here."""

    n_slots: int = 16  # concurrent requests in flight; >= pool processes x threads
    slot_bytes: int = 2 << 20  # 2 MiB: a 64x128 minilm batch needs 128 KiB in, 96 KiB out
    max_batch: int = 64  # rows per merged device batch unless the registry row says otherwise
    shm_dir: Path = SHM_DIR
    run_dir: Path | None = None  # default: <tmp>/agentq-engine-<watch_pid>
    watch_pid: int = 0  # the engine exits when this process is gone (0: the starting client)
    threads: int = 0  # batches run at once (runner threads); 0 = one per CPU, 1 on CUDA
    start_timeout_s: float = 60.0
    request_timeout_s: float = 120.0
    slot_wait_s: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> EngineOptions:
        watch = self.watch_pid or default_watch_pid()
        run_dir = self.run_dir or Path(tempfile.gettempdir()) / f"agentq-engine-{watch}"
        return replace(self, watch_pid=watch, run_dir=Path(run_dir))

    def to_json(self) -> str:
        d = asdict(self)
        d["shm_dir"], d["run_dir"] = str(self.shm_dir), str(self.run_dir) if self.run_dir else None
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> EngineOptions:
        d = json.loads(text)
        d["shm_dir"] = Path(d["shm_dir"])
        d["run_dir"] = Path(d["run_dir"]) if d.get("run_dir") else None
        return cls(**d)


def default_watch_pid() -> int:
    """The Celery main process when called in a prefork pool child, else this process."""
    try:
        from billiard.process import current_process

        if current_process().name != "MainProcess":
            return os.getppid()
    except ImportError:
        pass
    return os.getpid()


# ---- framing (shared with the server) ------------------------------------------------------
def send_msg(sock: socket.socket, msg: dict[str, Any]) -> None:
    body = json.dumps(msg, separators=(",", ":")).encode()
    sock.sendall(_LEN.pack(len(body)) + body)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("engine closed the connection")
        buf += chunk
    return bytes(buf)


def recv_msg(sock: socket.socket) -> dict[str, Any]:
    """One reply. The peer answers one message per request and sends nothing unasked, so one
    ``recv`` usually returns the whole frame (length and body: one syscall, not two); bytes past
    the frame would be a protocol error."""
    data = sock.recv(_RECV_BYTES)
    if not data:
        raise ConnectionError("engine closed the connection")
    if len(data) < _LEN.size:
        data += recv_exact(sock, _LEN.size - len(data))
    (n,) = _LEN.unpack_from(data)
    if n > MAX_FRAME:
        raise ConnectionError(f"frame of {n} bytes is over the {MAX_FRAME} limit")
    end = _LEN.size + n
    if len(data) < end:
        data += recv_exact(sock, end - len(data))
    elif len(data) > end:
        raise ConnectionError(f"{len(data) - end} unexpected bytes after a reply")
    return json.loads(data[_LEN.size:])


def socket_path(opts: EngineOptions) -> Path:
    assert opts.run_dir is not None
    return opts.run_dir / "engine.sock"


def pid_path(opts: EngineOptions) -> Path:
    assert opts.run_dir is not None
    return opts.run_dir / "engine.pid"


# ---- supervision ---------------------------------------------------------------------------
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


def worker_json(settings: WorkerSettings) -> str:
    """The worker settings for the engine's command line (no secrets live in them)."""
    return json.dumps({k: str(v) if isinstance(v, Path) else v
                       for k, v in asdict(settings).items()})


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
        pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "workers.engine_server",
                                              "--options", opts.to_json(),
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


# ---- the client ----------------------------------------------------------------------------
class EngineClient:
    """Drop-in for ``InferenceEngine`` in a pool process; thread-safe (one request at a time)."""

    def __init__(self, settings: WorkerSettings, options: EngineOptions | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.options = (options or EngineOptions()).resolved()
        self._env = env
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._slab: Slab | None = None
        self._hello: dict[str, Any] = {}
        self._models: dict[str, dict[str, Any]] = {}
        self._next_id = 0
        self._wanted: list[str] = []
        # Connect (starting the engine if needed) in the background: Celery kills a pool process
        # whose start-up (worker_process_init) takes over 4 s; requests wait on the lock instead.
        self._lock.acquire()
        threading.Thread(target=self._start, name="agentq-engine-connect", daemon=True).start()

    def _start(self) -> None:
        try:
            self._connect()
            while self._wanted:
                name = self._wanted.pop(0)
                try:
                    self._model(name)
                except EngineUnavailable as e:
                    log.warning("model_unavailable_at_start", model=name, error=str(e)[:200])
        except EngineUnavailable as e:
            log.warning("engine_not_ready", error=str(e)[:200])
        finally:
            self._lock.release()

    def wait_ready(self, timeout_s: float = 120.0) -> bool:
        """Wait for the background connect; True when connected to a live engine."""
        if not self._lock.acquire(timeout=timeout_s):
            return False
        try:
            return self._sock is not None
        finally:
            self._lock.release()

    @property
    def device(self) -> str:
        return str(self._hello.get("device", self.settings.device))

    @property
    def engine_pid(self) -> int:
        return int(self._hello.get("engine_pid", 0))

    def _connect(self) -> None:
        try:
            sock, hello = ensure_engine(self.options, self.settings, self._env)
            slab = Slab.attach(hello["slab"], Path(hello["shm_dir"]))
        except (OSError, ValueError) as e:
            raise EngineUnavailable(f"cannot reach the inference engine: {e}") from e
        self._sock, self._slab, self._hello = sock, slab, hello
        self._models.clear()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._slab is not None:
            self._slab.close(unlink=False)
        self._sock = self._slab = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def stats(self) -> dict[str, Any]:
        """The engine's counters: batches run, requests merged, slots in use, pending."""
        with self._lock:
            return dict(self._with_engine(lambda: self._call({"op": "stats"})))

    def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self._sock is not None
        send_msg(self._sock, msg)
        return recv_msg(self._sock)

    def _with_engine(self, fn: Any) -> Any:
        """Run ``fn`` against the engine; on engine death restart it and retry once."""
        for attempt in (1, 2):
            try:
                if self._sock is None:
                    self._connect()
                return fn()
            except (OSError, ConnectionError, ValueError) as e:
                self._on_broken(e)
                if attempt == 2:
                    raise EngineUnavailable(f"inference engine unavailable: {e}") from e
        raise AssertionError("unreachable")

    def _on_broken(self, error: Exception) -> None:
        log.warning("engine_lost", engine_pid=self.engine_pid, error=str(error)[:200])
        if isinstance(error, TimeoutError) and pid_alive(self.engine_pid):
            start = self._hello.get("engine_start", 0)
            if proc_start_time(self.engine_pid) == start:  # hung: end it so a new one can start
                os.kill(self.engine_pid, signal.SIGKILL)
        self._drop()
        _reap()

    def model(self, name: str) -> dict[str, Any]:
        """Ask the engine to load ``name``; raises EngineUnavailable when it cannot. While the
        background connect runs, the name is queued for it and this returns at once."""
        if not self._lock.acquire(blocking=False):
            self._wanted.append(name)
            return {"ok": True, "pending": True}
        try:
            return self._model(name)
        finally:
            self._lock.release()

    def _model(self, name: str) -> dict[str, Any]:
        info = self._models.get(name)
        if info is None:
            info = self._with_engine(lambda: self._call({"op": "load", "model": name}))
            if not info.get("ok"):
                raise EngineUnavailable(info.get("error", f"engine cannot load {name!r}"))
            self._models[name] = info
        return info

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            self._model(name)
            return self._with_engine(lambda: self._run_chunked(name, feeds))

    def _run_chunked(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert self._slab is not None
        names = list(feeds)
        arrays = [np.ascontiguousarray(feeds[k]) for k in names]
        n = int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 0
        per_row = sum(a.nbytes for a in arrays) // max(n, 1)
        rows = max(1, (self._slab.slot_bytes // 2) // max(per_row, 1))
        parts: list[list[np.ndarray]] = []
        start = 0
        while True:
            take = min(rows, n - start)
            outs = self._request(name, names, [a[start:start + take] for a in arrays])
            if outs is None:  # outputs did not fit the slot: smaller chunks
                if rows == 1:
                    raise EngineInferenceError(
                        f"one row of {name!r} does not fit a {self._slab.slot_bytes}-byte slot")
                rows = max(1, rows // 2)
                continue
            parts.append(outs)
            start += take
            if start >= n:
                break
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]

    def _request(self, name: str, names: list[str],
                 arrays: list[np.ndarray]) -> list[np.ndarray] | None:
        slab = self._slab
        assert slab is not None
        per_row = sum(a.nbytes for a in arrays) // max(int(arrays[0].shape[0]), 1)
        if per_row > slab.slot_bytes // 2:
            raise EngineInferenceError(f"one row of {name!r} ({per_row} bytes) does not fit "
                                       f"half a {slab.slot_bytes}-byte slot")
        try:
            slot = slab.alloc(self.options.slot_wait_s)
        except NoFreeSlot as e:
            raise EngineUnavailable(str(e)) from e
        try:
            descs, end = slab.put(slot, arrays)
            for d, k in zip(descs, names, strict=True):
                d["name"] = k
            self._next_id += 1
            reply = self._call({"op": "run", "id": self._next_id, "model": name, "slot": slot,
                                "inputs": descs, "out_offset": end})
            if reply.get("id") != self._next_id:
                raise ConnectionError(f"reply {reply.get('id')} for request {self._next_id}")
            if not reply.get("ok"):
                kind = reply.get("kind")
                if kind == "overflow":
                    return None
                if kind == "unavailable":
                    raise EngineUnavailable(reply.get("error", "engine cannot serve the model"))
                raise EngineInferenceError(reply.get("error", "inference failed"))
            return [slab.view(slot, o["offset"], o["shape"], o["dtype"]).copy()
                    for o in reply["outputs"]]
        finally:
            slab.free(slot)


def resolve_mode(mode: str, device: str) -> str:
    """``auto`` (the default): the engine process on CUDA (one process owns the device; pool
    processes never initialise CUDA), in-process sessions on CPU. On CPU the engine is the default
    only when it beats in-process by >= 5 % end to end on every model (``bench.shm_bench``
    ``default_modes``); measured (see the module docstring) it did not: digits-mlp 1.20x, minilm-l6
    0.94x (median paired ratios, 2 shared CPUs), so a tie goes to in-process sessions: one process
    fewer, no socket hop, no engine restart path. ``shared`` stays available on CPU (it keeps one
    copy of each model per host, and was 1.9x on the minilm worker path)."""
    if mode in ("inprocess", "shared"):
        return mode
    if mode != "auto":
        raise ValueError(f"engine_mode must be inprocess, shared or auto, not {mode!r}")
    if device == "cpu":
        return "inprocess"
    import onnxruntime as ort  # lists providers only; CUDA is not initialised by this

    return "shared" if "CUDAExecutionProvider" in ort.get_available_providers() else "inprocess"


def open_engine(settings: WorkerSettings, db: Any) -> Any:
    """The engine a pool process uses, by ``settings.engine_mode``: an ``EngineClient`` or an
    in-process ``InferenceEngine`` (both have ``run(model, feeds)``, ``model``, ``device``)."""
    if resolve_mode(settings.engine_mode, settings.device) == "shared":
        return EngineClient(settings)
    from workers.engine import InferenceEngine

    return InferenceEngine(settings, db)


__all__ = ["EngineClient", "EngineOptions", "EngineInferenceError", "WorkerError", "open_engine"]
