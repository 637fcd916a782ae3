"""The per-device engine process: owns the ONNX Runtime sessions (``InferenceEngine``, one per
model) and the shared-memory slab, serves pool processes over a unix socket.

Started by a pool process as ``python -m workers.engine_server --options <json>`` (see
``workers.engine_client`` for who starts and restarts it): a fresh interpreter, like
multiprocessing's ``spawn``, so CUDA is initialised only here and never inherited through a fork.
Database settings come from the environment, never from the command line.

Loop: read requests from every connected client; merge pending requests for the same model, in
arrival order, into one device batch of up to the model's max batch; run it; write each caller's
slice of the outputs into the caller's slot and reply. A lone request runs zero-copy: its inputs
are bound from the slot and ORT writes the outputs straight into the slot (IO binding, CPU or
CUDA). A merged batch gathers inputs once (the device batch) and scatters output slices. If a
merged batch fails, its requests run one by one, so a bad request fails alone. Between batches the
engine reclaims slots whose owner died; it exits when ``watch_pid`` is gone or on SIGTERM, and
removes its slab, socket and pid file.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from agentq.config import Settings, WorkerSettings
from agentq.log import configure_logging, get_logger
from workers.engine_client import (
    _LEN,
    MAX_FRAME,
    EngineOptions,
    pid_path,
    send_msg,
    socket_path,
)
from workers.errors import EngineUnavailable
from workers.shm import Slab, pid_alive, proc_start_time

log = get_logger("agentq.engine_server")

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(bool)": np.bool_}


@dataclass
class Request:
    conn: socket.socket
    id: int
    model: str
    slot: int
    inputs: list[dict[str, Any]]
    out_offset: int
    rows: int


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.pid = 0


def output_specs(session: Any) -> list[tuple[tuple[int, ...], type]] | None:
    """(non-batch dims, dtype) per output when all non-batch dims are static, else None."""
    specs = []
    for o in session.get_outputs():
        dims = o.shape[1:]
        if not all(isinstance(d, int) for d in dims) or o.type not in _ORT_TYPES:
            return None
        specs.append((tuple(dims), _ORT_TYPES[o.type]))
    return specs


def run_bound(loaded: Any, device: str, feeds: dict[str, np.ndarray],
              outs: list[np.ndarray]) -> None:
    """Run with IO binding: inputs read from, outputs written into the given host buffers."""
    io = loaded.session.io_binding()
    for name, arr in feeds.items():
        io.bind_input(name, "cpu", 0, arr.dtype.type, list(arr.shape), arr.ctypes.data)
    for name, out in zip(loaded.output_names, outs, strict=True):
        io.bind_output(name, "cpu", 0, out.dtype.type, list(out.shape), out.ctypes.data)
    if device == "cuda":
        io.synchronize_inputs()
    loaded.session.run_with_iobinding(io)
    if device == "cuda":
        io.synchronize_outputs()


class EngineServer:
    def __init__(self, settings: Settings, opts: EngineOptions) -> None:
        from storage.db import make_engine
        from workers.engine import InferenceEngine

        self.opts = opts
        worker = settings.worker
        if opts.threads:
            worker = replace(worker, intra_op_threads=opts.threads)
        self.db = make_engine(settings.worker_database_url, pool_size=1,
                              app_name="agentq-engine")
        self.engine = InferenceEngine(worker, self.db)
        self.slab = Slab.create(opts.n_slots, opts.slot_bytes, opts.shm_dir)
        self.sel = selectors.DefaultSelector()
        self.pending: deque[Request] = deque()
        self.stopping = False
        self._specs: dict[str, Any] = {}
        self.batches = 0
        self.merged = 0
        path = socket_path(opts)
        path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(64)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        pid_path(opts).write_text(str(os.getpid()))
        log.info("engine_ready", pid=os.getpid(), socket=str(path), slab=self.slab.name,
                 device=self.engine.device)

    # ---- io ------------------------------------------------------------------------------
    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        sock.setblocking(True)  # replies are small: a send never waits on a slow reader
        self.sel.register(sock, selectors.EVENT_READ, Conn(sock))

    def _close(self, conn: Conn) -> None:
        self.sel.unregister(conn.sock)
        conn.sock.close()
        dropped = [r for r in self.pending if r.conn is conn.sock]
        for r in dropped:
            self.pending.remove(r)

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.buf += data
        while len(conn.buf) >= _LEN.size:
            (n,) = _LEN.unpack_from(conn.buf)
            if n > MAX_FRAME:
                self._close(conn)
                return
            if len(conn.buf) < _LEN.size + n:
                break
            body = bytes(conn.buf[_LEN.size:_LEN.size + n])
            del conn.buf[:_LEN.size + n]
            self._handle(conn, json.loads(body))

    def _reply(self, sock: socket.socket, msg: dict[str, Any]) -> None:
        try:
            send_msg(sock, msg)
        except OSError:
            pass  # the client is gone; its connection closes on the next read

    def _handle(self, conn: Conn, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "hello":
            conn.pid = int(msg.get("pid", 0))
            self._reply(conn.sock, {
                "ok": True, "engine_pid": os.getpid(), "engine_start": proc_start_time(os.getpid()),
                "slab": self.slab.name, "shm_dir": str(self.opts.shm_dir),
                "n_slots": self.slab.n_slots, "slot_bytes": self.slab.slot_bytes,
                "device": self.engine.device})
        elif op == "load":
            try:
                m = self.engine.model(msg["model"])
                self._reply(conn.sock, {"ok": True, "variant": m.variant, "version": m.version,
                                        "max_batch": self._max_batch(msg["model"])})
            except EngineUnavailable as e:
                self._reply(conn.sock, {"ok": False, "kind": "unavailable", "error": str(e)})
        elif op == "stats":
            self._reply(conn.sock, {"ok": True, "batches": self.batches, "merged": self.merged,
                                    "slots_used": self.slab.used(), "pending": len(self.pending)})
        elif op == "run":
            rows = int(msg["inputs"][0]["shape"][0]) if msg["inputs"] else 0
            self.pending.append(Request(conn.sock, msg["id"], msg["model"], int(msg["slot"]),
                                        msg["inputs"], int(msg["out_offset"]), rows))
        else:
            self._reply(conn.sock, {"ok": False, "kind": "protocol", "error": f"bad op {op!r}"})

    # ---- batching ------------------------------------------------------------------------
    def _max_batch(self, model: str) -> int:
        loaded = self.engine.model(model)
        return int(getattr(loaded, "max_batch", 0) or self.opts.max_batch)

    def _next_group(self) -> list[Request]:
        first = self.pending.popleft()
        group, rows = [first], first.rows
        try:
            limit = self._max_batch(first.model)
        except EngineUnavailable:
            return group
        for r in list(self.pending):
            if r.model == first.model and rows + r.rows <= limit:
                self.pending.remove(r)
                group.append(r)
                rows += r.rows
        return group

    def _views(self, r: Request) -> dict[str, np.ndarray]:
        return {d["name"]: self.slab.view(r.slot, d["offset"], d["shape"], d["dtype"])
                for d in r.inputs}

    def _execute(self, group: list[Request]) -> None:
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
            try:
                self._run_merged(loaded, group)
                return
            except Exception as e:  # ORT errors: run each alone so a bad request fails alone
                log.warning("merged_batch_failed", model=group[0].model, error=str(e)[:200])
        for r in group:
            try:
                self._run_one(loaded, r)
            except Exception as e:
                self._reply(r.conn, {"ok": False, "id": r.id, "kind": "inference",
                                     "error": str(e)[:2000]})

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
            timeout = 0 if self.pending else 0.5
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)
            if self.pending:
                self._execute(self._next_group())
            now = time.monotonic()
            if now - last_check > 0.5:
                last_check = now
                if not pid_alive(self.opts.watch_pid):
                    log.info("engine_watch_gone", watch_pid=self.opts.watch_pid)
                    break
                self.slab.sweep(keep={r.slot for r in self.pending})

    def close(self) -> None:
        self.sel.close()
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
    p = argparse.ArgumentParser(prog="python -m workers.engine_server")
    p.add_argument("--options", required=True, help="EngineOptions as JSON")
    p.add_argument("--worker", help="WorkerSettings as JSON (default: from the environment)")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    if args.worker:
        w = json.loads(args.worker)
        w["models_dir"] = Path(w["models_dir"])
        settings = replace(settings, worker=WorkerSettings(**w))
    configure_logging(settings.log_level, settings.log_json)
    opts = EngineOptions.from_json(args.options).resolved()
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
