"""The test proxy itself, against a local echo server (no services needed)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.faults.proxy import Proxy

pytestmark = pytest.mark.timeout(60)


def _echo(c: socket.socket) -> None:
    with c:
        try:
            for data in iter(lambda: c.recv(4096), b""):
                c.sendall(data)
        except OSError:
            pass


@pytest.fixture
def echo():
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


@pytest.fixture
def proxy(echo):
    p = Proxy(echo).start()
    yield p
    p.stop()


def _roundtrip(port: int, payload: bytes = b"ping", timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        return s.recv(4096)


def test_pass_forwards_both_ways(proxy):
    assert _roundtrip(proxy.port) == b"ping"


def test_delay_adds_latency(proxy):
    proxy.set("delay", delay_ms=150)
    t0 = time.monotonic()
    assert _roundtrip(proxy.port) == b"ping"
    assert time.monotonic() - t0 >= 0.3  # both directions


def test_blackhole_holds_bytes_until_healed(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        assert _roundtrip(proxy.port) == b"ping"
        proxy.set("blackhole")
        s.sendall(b"held")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(4096)
        proxy.set("pass")
        s.settimeout(5)
        assert s.recv(4096) == b"held"


def test_reset_closes_open_and_new_connections(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"a")
        assert s.recv(10) == b"a"
        proxy.set("reset")
        with pytest.raises(OSError):
            s.sendall(b"b")
            if not s.recv(10):
                raise ConnectionResetError("closed")
    try:  # a new connection is accepted by the kernel, then reset before any byte comes back
        assert _roundtrip(proxy.port) == b""
    except OSError:
        pass
    proxy.set("pass")
    assert _roundtrip(proxy.port) == b"ping"
