"""Pieces of the engine process's batching: pending requests, connections, IO-bound runs and how
many runner threads a device gets (see ``engine.server``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentq.config import EngineOptions

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(bool)": np.bool_}


SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}


@dataclass
class Request:
    conn: Conn
    id: int
    model: str
    slot: int
    inputs: list[dict[str, Any]]
    out_offset: int
    rows: int


_WAKE = object()  # selector key data of the runners' wake-up socket


def _shape_key(r: Request) -> tuple[Any, ...]:
    return tuple((d["name"], tuple(d["shape"][1:]), d["dtype"]) for d in r.inputs)


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.pid = 0
        self.inflight = 0  # requests of this connection being run now
        self.closed = False  # EOF seen: the socket closes once nothing runs for it


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


def engine_runners(opts: EngineOptions, device: str) -> int:
    """How many device batches the engine runs at once, each on its own runner thread with the
    session's ``intra_op_threads`` (1 by default, as in a pool process): ``opts.threads``, else
    one per CPU this process may use on CPU (the engine then runs the batches of that many pool
    processes side by side, like in-process sessions do), one on CUDA (one device)."""
    if opts.threads:
        return opts.threads
    if device == "cuda":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)
