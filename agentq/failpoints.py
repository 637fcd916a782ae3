"""Failpoints: env-driven hooks that let tests crash a process at an exact point.

``AGENTQ_FAILPOINT`` holds comma-separated specs, each ``name:arg[:action]``:

* counted points, ``failpoint(name)``: ``arg`` is N, the point fires on its N-th hit in this
  process (``bridge.after_publish:3`` kills the bridge right after its 3rd Celery publish);
* keyed points, ``failpoint_keys(name, keys)``: ``arg`` is a marker string, the point fires when
  a key contains it (``worker.item:POISON-7f3a:raise`` fails every job whose input carries the
  marker). Keyed points only exist when the variable is set, so production never fires them.

Actions: ``crash`` (default; SIGKILL self, like an OOM kill), ``exit`` (``os._exit(70)``, no
cleanup), ``raise`` (raise :class:`FailpointError`), ``sleepN`` (stall N seconds, like a worker
that is slow, not dead). With ``AGENTQ_FAILPOINT_ONCE_DIR`` set, a
counted point fires at most once across all processes (a marker file there records that it
fired), so a restarted or forked process does not crash again; keyed points fire every time.

Unset (production), every call is one dict lookup on an empty dict.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

ENV = "AGENTQ_FAILPOINT"
ONCE_DIR_ENV = "AGENTQ_FAILPOINT_ONCE_DIR"
ACTIONS = ("crash", "exit", "raise")


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is ``raise``."""


@dataclass
class Spec:
    name: str
    arg: str
    action: str = "crash"
    hits: int = 0


def _is_sleep(action: str) -> bool:
    return action.startswith("sleep") and action[5:].replace(".", "", 1).isdigit()


def parse(text: str) -> dict[str, Spec]:
    specs: dict[str, Spec] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, rest = part.partition(":")
        arg, _, action = rest.rpartition(":") if rest.count(":") else (rest, "", "")
        if action and action not in ACTIONS and not _is_sleep(action):
            arg, action = rest, ""
        specs[name] = Spec(name, arg, action or "crash")
    return specs


_points: dict[str, Spec] = parse(os.environ.get(ENV, ""))


def configure(text: str | None) -> None:
    """Replace the active failpoints (tests in-process); ``None`` or ``""`` disables them."""
    global _points
    _points = parse(text or "")


def active(name: str) -> bool:
    return name in _points


def failpoint(name: str) -> None:
    """A counted point: fires on the configured N-th hit in this process."""
    spec = _points.get(name)
    if spec is None:
        return
    spec.hits += 1
    if spec.arg.isdigit() and spec.hits == int(spec.arg) and _first_time(spec):
        _fire(spec, f"hit {spec.hits}")


def failpoint_keys(name: str, keys: Iterable[str]) -> None:
    """A keyed point: fires when any key contains the configured marker."""
    spec = _points.get(name)
    if spec is None or not spec.arg:
        return
    for key in keys:
        if spec.arg in key:
            _fire(spec, f"key matched {spec.arg!r}")


def _first_time(spec: Spec) -> bool:
    once = os.environ.get(ONCE_DIR_ENV)
    if not once:
        return True
    try:
        fd = os.open(os.path.join(once, f"{spec.name}.fired"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _fire(spec: Spec, why: str) -> None:
    if _is_sleep(spec.action):
        os.write(2, f"failpoint {spec.name} fired ({why}): {spec.action}\n".encode())
        time.sleep(float(spec.action[5:]))
        return
    if spec.action == "raise":
        raise FailpointError(f"failpoint {spec.name} ({why})")
    os.write(2, f"failpoint {spec.name} fired ({why}): {spec.action}\n".encode())
    if spec.action == "exit":
        os._exit(70)
    os.kill(os.getpid(), signal.SIGKILL)
