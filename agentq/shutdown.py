"""Graceful stop for long-running commands: SIGTERM and SIGINT set an event the loop watches."""

from __future__ import annotations

import signal
import threading
from typing import Any

from agentq.log import get_logger

log = get_logger("agentq.shutdown")


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (the process's main thread must call this)."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
