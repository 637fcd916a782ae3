"""The engine's wire protocol, shared by ``engine.client`` and ``engine.server``.

A unix socket, 4-byte big-endian length + UTF-8 JSON per message; tensors never cross it, only
slot ids, offsets, shapes and dtypes (the tensors live in the shared slab, ``engine.slab``). The
peer answers one message per request and sends nothing unasked. Ops: ``hello`` (pid), ``model``
(load, describe), ``run`` (slot, inputs, out_offset, rows), ``stats``.

Also the engine's run directory (socket, pid file) and how its options travel on its command line.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from agentq.config import EngineOptions, WorkerSettings

_LEN = struct.Struct(">I")
HEADER_BYTES = _LEN.size
MAX_FRAME = 1 << 20
_RECV_BYTES = 1 << 16


def pack(msg: dict[str, Any]) -> bytes:
    """One frame: length then JSON body."""
    body = json.dumps(msg, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


def frame_length(data: bytes | bytearray, at: int = 0) -> int:
    """The body length of the frame whose header starts at ``at``."""
    return int(_LEN.unpack_from(data, at)[0])


def send_msg(sock: socket.socket, msg: dict[str, Any]) -> None:
    sock.sendall(pack(msg))

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


def default_watch_pid() -> int:
    """The Celery main process when called in a prefork pool child, else this process."""
    try:
        from billiard.process import current_process

        if current_process().name != "MainProcess":
            return os.getppid()
    except ImportError:
        pass
    return os.getpid()


def resolved(opts: EngineOptions) -> EngineOptions:
    """Options with the watched pid and the run directory filled in."""
    watch = opts.watch_pid or default_watch_pid()
    run_dir = opts.run_dir or Path(tempfile.gettempdir()) / f"agentq-engine-{watch}"
    return replace(opts, watch_pid=watch, run_dir=Path(run_dir))


def options_json(opts: EngineOptions) -> str:
    d = asdict(opts)
    d["shm_dir"], d["run_dir"] = str(opts.shm_dir), str(opts.run_dir) if opts.run_dir else None
    return json.dumps(d)


def options_from_json(text: str) -> EngineOptions:
    d = json.loads(text)
    d["shm_dir"] = Path(d["shm_dir"])
    d["run_dir"] = Path(d["run_dir"]) if d.get("run_dir") else None
    return EngineOptions(**d)


def worker_json(settings: WorkerSettings) -> str:
    """The worker settings for the engine's command line (no secrets live in them)."""
    return json.dumps({k: str(v) if isinstance(v, Path) else v
                       for k, v in asdict(settings).items()})
