"""The per-device engine process: owns the ONNX Runtime sessions (``InferenceEngine``, one per
model) and the shared-memory slab, serves pool processes over a unix socket.

Started by a pool process as ``python -m engine.server --options <json>`` (see
``engine.client`` for who starts and restarts it): a fresh interpreter, like
multiprocessing's ``spawn``, so CUDA is initialised only here and never inherited through a fork.
Database settings come from the environment, never from the command line.

Loop (main thread): read requests from every connected client; group pending requests for the
same model with the same non-batch input shapes, in arrival order, into one device batch of up to
the model's max batch; hand the group to a free runner thread. Runners (``EngineOptions.threads``:
one per CPU on CPU, one on CUDA) run batches side by side, as that many pool processes would with
in-process sessions, each session op on the runner's own thread (``intra_op_threads`` of the
worker, 1 by default; intra-op spinning off, so idle threads never take the CPU that the pool's
tokenizing and result writing needs); ORT releases the GIL while it computes. A runner writes each
caller's slice of the outputs into the caller's slot and replies, then wakes the main loop through a
socketpair. A lone request runs zero-copy: its inputs are bound from the slot and ORT writes the
outputs straight into the slot (IO binding, CPU or CUDA). A merged batch gathers inputs once (the
device batch) and scatters output slices. If a merged batch fails, its requests run one by one, so
a bad request fails alone. Between batches the engine reclaims slots whose owner died (never a
slot of a pending or running request); it exits when ``watch_pid`` is gone or on SIGTERM (after
the runners finish), and removes its slab, socket and pid file.

Measured (bench/results/shm.json, 2 shared vCPUs): ~140 µs per request over an in-process call
(digits-mlp, 1 row); end to end 1.20x (digits-mlp) and 0.94x (minilm-l6) of in-process sessions,
median paired ratios; in-process stays the CPU default (``engine.factory.resolve_mode``). Before the
runners (one batch at a time on 1 intra-op thread) the minilm worker path ran at 0.63x; with 2
intra-op threads that spin, 0.53x; without spinning, 0.95x; with the runners, 1.2-1.9x.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from agentq.config import EngineOptions, Settings, WorkerSettings
from agentq.log import configure_logging, get_logger
from engine.errors import EngineUnavailable
from engine.protocol import (
    HEADER_BYTES,
    MAX_FRAME,
    frame_length,
    options_from_json,
    pid_path,
    resolved,
    send_msg,
    socket_path,
)
from engine.runner import (
    _WAKE,
    SESSION_CONFIG,
    Conn,
    Request,
    _shape_key,
    engine_runners,
    output_specs,
    run_bound,
)
from engine.slab import Slab, pid_alive, proc_start_time

log = get_logger("agentq.engine_server")

class EngineServer:
    def __init__(self, settings: Settings, opts: EngineOptions) -> None:
        from engine.sessions import InferenceEngine
        from storage.db import make_engine

        self.opts = opts
        worker = settings.worker
        self.db = make_engine(settings.worker_database_url, pool_size=1,
                              app_name="agentq-engine")
        # Intra-op threads (when intra_op_threads > 1) that spin while waiting for work would take
        # the CPU from the pool processes that tokenize and write results: sleep instead.
        self.engine = InferenceEngine(worker, self.db, session_config=SESSION_CONFIG)
        self.threads = engine_runners(opts, self.engine.device)
        self.runners = ThreadPoolExecutor(self.threads, thread_name_prefix="agentq-runner")
        self.busy = 0
        self.inflight_slots: dict[int, int] = {}  # slot -> requests of it being run
        self.done: deque[tuple[list[Request], bool]] = deque()  # (group, merge failed)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.slab = Slab.create(opts.n_slots, opts.slot_bytes, opts.shm_dir)
        self.sel = selectors.DefaultSelector()
        self.pending: deque[Request] = deque()
        self.stopping = False
        self._specs: dict[str, Any] = {}
        self.batches = 0
        self.merged = 0
        self.merge_failures = 0
        path = socket_path(opts)
        path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(64)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        pid_path(opts).write_text(str(os.getpid()))
        log.info("engine_ready", pid=os.getpid(), socket=str(path), slab=self.slab.name,
                 device=self.engine.device)

    # ---- io ------------------------------------------------------------------------------
    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        sock.setblocking(True)  # replies are small: a send never waits on a slow reader
        self.sel.register(sock, selectors.EVENT_READ, Conn(sock))

    def _close(self, conn: Conn) -> None:
        if not conn.closed:
            conn.closed = True
            self.sel.unregister(conn.sock)
            dropped = [r for r in self.pending if r.conn is conn]
            for r in dropped:
                self.pending.remove(r)
        if conn.inflight == 0:  # a runner may still reply on it: close after the last one
            conn.sock.close()

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.buf += data
        while len(conn.buf) >= HEADER_BYTES:
            n = frame_length(conn.buf)
            if n > MAX_FRAME:
                self._close(conn)
                return
            if len(conn.buf) < HEADER_BYTES + n:
                break
            body = bytes(conn.buf[HEADER_BYTES:HEADER_BYTES + n])
            del conn.buf[:HEADER_BYTES + n]
            self._handle(conn, json.loads(body))

    def _reply(self, conn: Conn, msg: dict[str, Any]) -> None:
        try:
            send_msg(conn.sock, msg)
        except OSError:
            pass  # the client is gone; its connection closes on the next read

    def _handle(self, conn: Conn, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "hello":
            conn.pid = int(msg.get("pid", 0))
            self._reply(conn, {
                "ok": True, "engine_pid": os.getpid(), "engine_start": proc_start_time(os.getpid()),
                "slab": self.slab.name, "shm_dir": str(self.opts.shm_dir),
                "n_slots": self.slab.n_slots, "slot_bytes": self.slab.slot_bytes,
                "device": self.engine.device, "threads": self.threads})
        elif op == "load":
            try:
                m = self.engine.model(msg["model"])
                self._reply(conn, {"ok": True, "variant": m.variant, "version": m.version,
                                        "max_batch": self._max_batch(msg["model"])})
            except EngineUnavailable as e:
                self._reply(conn, {"ok": False, "kind": "unavailable", "error": str(e)})
        elif op == "stats":
            self._reply(conn, {"ok": True, "batches": self.batches, "merged": self.merged,
                                    "threads": self.threads,
                                    "merge_failures": self.merge_failures,
                                    "slots_used": self.slab.used(), "pending": len(self.pending)})
        elif op == "run":
            rows = int(msg["inputs"][0]["shape"][0]) if msg["inputs"] else 0
            self.pending.append(Request(conn, msg["id"], msg["model"], int(msg["slot"]),
                                        msg["inputs"], int(msg["out_offset"]), rows))
        else:
            self._reply(conn, {"ok": False, "kind": "protocol", "error": f"bad op {op!r}"})

    # ---- batching ------------------------------------------------------------------------
    def _max_batch(self, model: str) -> int:
        loaded = self.engine.model(model)
        return int(getattr(loaded, "max_batch", 0) or self.opts.max_batch)

    def _next_group(self) -> list[Request]:
        """The oldest request and, in arrival order, later ones for the same model with the same
        non-batch input shapes (a merged batch is one concatenation), up to the max batch."""
        first = self.pending.popleft()
        group, rows = [first], first.rows
        try:
            limit = self._max_batch(first.model)
        except EngineUnavailable:
            return group
        if rows >= limit:
            return group
        key = _shape_key(first)
        for r in list(self.pending):
            if r.model == first.model and rows + r.rows <= limit and _shape_key(r) == key:
                self.pending.remove(r)
                group.append(r)
                rows += r.rows
        return group

    def _views(self, r: Request) -> dict[str, np.ndarray]:
        return {d["name"]: self.slab.view(r.slot, d["offset"], d["shape"], d["dtype"])
                for d in r.inputs}

    def _dispatch(self, group: list[Request]) -> None:
        """Hand a group to a free runner (main thread; the model is loaded here, not there)."""
        try:
            loaded = self.engine.model(group[0].model)
        except EngineUnavailable as e:
            for r in group:
                self._reply(r.conn, {"ok": False, "id": r.id, "kind": "unavailable",
                                     "error": str(e)})
            return
        self.batches += 1
        if len(group) > 1:
            self.merged += len(group)
        self.busy += 1
        for r in group:
            r.conn.inflight += 1
            self.inflight_slots[r.slot] = self.inflight_slots.get(r.slot, 0) + 1
        self.runners.submit(self._execute, loaded, group)

    def _execute(self, loaded: Any, group: list[Request]) -> None:
        """On a runner thread: run the group (ORT releases the GIL while it computes), reply to
        each caller, and report back to the main loop."""
        merge_failed = False
        try:
            if len(group) > 1:
                try:
                    self._run_merged(loaded, group)
                    return
                except Exception as e:  # ORT errors: run each alone so a bad one fails alone
                    merge_failed = True
                    log.warning("merged_batch_failed", model=group[0].model,
                                error=str(e)[:200])
            for r in group:
                try:
                    self._run_one(loaded, r)
                except Exception as e:
                    self._reply(r.conn, {"ok": False, "id": r.id, "kind": "inference",
                                         "error": str(e)[:2000]})
        finally:
            self.done.append((group, merge_failed))
            try:
                self._wake_w.send(b"\0")
            except OSError:  # the wake-up pipe is full: the main loop is awake anyway
                pass

    def _harvest(self) -> None:
        """Main thread: account for groups the runners finished."""
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self.done:
            group, merge_failed = self.done.popleft()
            self.busy -= 1
            self.merge_failures += merge_failed
            for r in group:
                r.conn.inflight -= 1
                left = self.inflight_slots[r.slot] - 1
                if left:
                    self.inflight_slots[r.slot] = left
                else:
                    del self.inflight_slots[r.slot]
                if r.conn.closed and r.conn.inflight == 0:
                    r.conn.sock.close()

    def _out_layout(self, r: Request, shapes: list[tuple[tuple[int, ...], Any]]
                    ) -> list[dict[str, Any]] | None:
        offset, layout = r.out_offset, []
        for shape, dtype in shapes:
            dt = np.dtype(dtype)
            n = math.prod(shape) * dt.itemsize
            if offset + n > self.slab.slot_bytes:
                return None
            layout.append({"offset": offset, "shape": list(shape), "dtype": dt.str})
            offset = (offset + n + 63) // 64 * 64
        return layout

    def _send_outputs(self, r: Request, arrays: list[np.ndarray]) -> None:
        layout = self._out_layout(r, [(a.shape, a.dtype) for a in arrays])
        if layout is None:
            self._reply(r.conn, {"ok": False, "id": r.id, "kind": "overflow",
                                 "error": "outputs do not fit the slot"})
            return
        for d, a in zip(layout, arrays, strict=True):
            np.copyto(self.slab.view(r.slot, d["offset"], d["shape"], d["dtype"]), a)
        self._reply(r.conn, {"ok": True, "id": r.id, "outputs": layout})

    def _run_one(self, loaded: Any, r: Request) -> None:
        feeds = self._views(r)
        specs = self._specs.get(r.model, False)
        if specs is False:
            specs = self._specs[r.model] = output_specs(loaded.session)
        if specs is None:  # dynamic output dims: let ORT allocate, then copy into the slot
            self._send_outputs(r, loaded.run(feeds))
            return
        layout = self._out_layout(r, [((r.rows, *dims), dt) for dims, dt in specs])
        if layout is None:
            self._reply(r.conn, {"ok": False, "id": r.id, "kind": "overflow",
                                 "error": "outputs do not fit the slot"})
            return
        outs = [self.slab.view(r.slot, d["offset"], d["shape"], d["dtype"]) for d in layout]
        run_bound(loaded, self.engine.device, feeds, outs)
        self._reply(r.conn, {"ok": True, "id": r.id, "outputs": layout})

    def _run_merged(self, loaded: Any, group: list[Request]) -> None:
        views = [self._views(r) for r in group]
        feeds = {k: np.concatenate([v[k] for v in views]) for k in views[0]}
        outputs = loaded.run(feeds)
        start = 0
        for r in group:
            self._send_outputs(r, [o[start:start + r.rows] for o in outputs])
            start += r.rows

    # ---- main loop -----------------------------------------------------------------------
    def serve(self) -> None:
        last_check = 0.0
        while not self.stopping:
            ready = self.pending and self.busy < self.threads
            for key, _ in self.sel.select(0 if ready else 0.5):
                if key.data is None:
                    self._accept()
                elif key.data is _WAKE:
                    self._harvest()
                else:
                    self._read(key.data)
            while self.pending and self.busy < self.threads:
                self._dispatch(self._next_group())
            now = time.monotonic()
            if now - last_check > 0.5:
                last_check = now
                if not pid_alive(self.opts.watch_pid):
                    log.info("engine_watch_gone", watch_pid=self.opts.watch_pid)
                    break
                self.slab.sweep(keep={r.slot for r in self.pending} | set(self.inflight_slots))

    def close(self) -> None:
        self.runners.shutdown(wait=True)  # runners write into the slab: let them finish
        self.sel.close()
        self._wake_r.close()
        self._wake_w.close()
        self.listener.close()
        socket_path(self.opts).unlink(missing_ok=True)
        pid = pid_path(self.opts)
        if pid.exists() and pid.read_text().strip() == str(os.getpid()):
            pid.unlink()
        self.slab.close(unlink=True)
        if not pid_alive(self.opts.watch_pid) and self.opts.run_dir is not None:
            for leftover in ("engine.lock",):  # the worker is gone: nobody restarts us
                (self.opts.run_dir / leftover).unlink(missing_ok=True)
            try:
                self.opts.run_dir.rmdir()
            except OSError:
                pass
        self.db.dispose()
        log.info("engine_stopped", batches=self.batches, merged_requests=self.merged)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.server")
    p.add_argument("--options", required=True, help="EngineOptions as JSON")
    p.add_argument("--worker", help="WorkerSettings as JSON (default: from the environment)")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    if args.worker:
        w = json.loads(args.worker)
        w["models_dir"] = Path(w["models_dir"])
        settings = replace(settings, worker=WorkerSettings(**w))
    configure_logging(settings.log_level, settings.log_json)
    opts = resolved(options_from_json(args.options))
    server = EngineServer(settings, opts)

    def stop(*_: Any) -> None:
        server.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
