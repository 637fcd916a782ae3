"""A small TCP proxy for network faults between agentq processes and a service (threads).

Modes, switchable at any time with :meth:`Proxy.set`:

* ``pass``: bytes flow both ways;
* ``delay``: every chunk waits ``delay_ms`` before it is forwarded (latency, both directions);
* ``blackhole``: connections are accepted but nothing is forwarded; bytes are held, as TCP
  retransmission holds them during a partition, and flow again when the mode returns to
  ``pass`` or ``delay`` (a partition that heals);
* ``reset``: every open connection is closed with a TCP RST, and new ones are reset at once.

What it covers: Redis and PostgreSQL completely (point ``AGENTQ_REDIS_URL`` /
``AGENTQ_WORKER_DATABASE_URL`` at :attr:`Proxy.port`). For Kafka only the *bootstrap*
connection: the broker advertises its own listener in metadata, so after bootstrap a client
talks to the broker directly; faults between a client and the broker itself are covered by
killing the broker (``services.sh kill kafka``), not by this proxy.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

CHUNK = 64 * 1024


def _rst(sock: socket.socket) -> None:
    """Abort a connection with a RST. The shutdown matters: a plain close() from this thread
    would not wake a pump thread blocked in recv() on the socket, and the kernel keeps the
    connection open until that recv returns (so the peer would never see the reset).
    SHUT_RD wakes it without sending a FIN; the close with a zero linger then sends the RST."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class Proxy:
    def __init__(self, target: str, listen_port: int = 0) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.mode = "pass"
        self.delay_ms = 0
        self._healed = threading.Condition()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", listen_port), reuse_port=False)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}",
                                        daemon=True)
        self.connections = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self._thread.start()
        return self

    def set(self, mode: str, delay_ms: int = 0) -> None:
        assert mode in ("pass", "delay", "blackhole", "reset"), mode
        with self._healed:
            self.mode, self.delay_ms = mode, delay_ms
            self._healed.notify_all()
        if mode == "reset":
            with self._lock:
                conns, self._conns = list(self._conns), set()
            for c in conns:
                _rst(c)

    def stop(self) -> None:
        self._stop.set()
        self.set("reset")
        self._listener.close()
        self._thread.join(5)

    # -- internals -------------------------------------------------------------------------
    def _wait_flowing(self) -> bool:
        """Block while blackholed; False when the proxy stops or resets."""
        with self._healed:
            while self.mode == "blackhole" and not self._stop.is_set():
                self._healed.wait(0.2)
        return self.mode != "reset" and not self._stop.is_set()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if self.mode == "reset":
                _rst(client)
                continue
            threading.Thread(target=self._open, args=(client,), daemon=True).start()

    def _open(self, client: socket.socket) -> None:
        if not self._wait_flowing():
            _rst(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            _rst(client)
            return
        self.connections += 1
        with self._lock:
            self._conns |= {client, upstream}
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                if not self._wait_flowing():
                    break
                if self.mode == "delay" and self.delay_ms:
                    time.sleep(self.delay_ms / 1000)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close_pair(src, dst)

    def _close_pair(self, *socks: Any) -> None:
        with self._lock:
            for s in socks:
                self._conns.discard(s)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
