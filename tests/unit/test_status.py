"""`agentq status` renders whatever it could read, including partial snapshots."""

from __future__ import annotations

from rich.console import Console

from agentq.config import Settings
from ops.status import Snapshot, render


def _text(snap: Snapshot) -> str:
    console = Console(width=120, record=True)
    console.print(render(snap, Settings(), 60))
    return console.export_text()


def test_status_screen_shows_lag_workers_and_model_percentiles():
    snap = Snapshot(at=0.0, lag={0: 1200, 1: 0}, queue_depth=7, workers={"w1@h": 3},
                    open_jobs={"queued": 40, "running": 8},
                    models=[{"model": "digits-mlp", "finished": 600, "succeeded": 598,
                             "not_ok": 2, "p50": 12.0, "p95": 40.7, "p99": 90.0}])
    out = _text(snap)
    for piece in ("1,200", "w1@h", "digits-mlp", "10.0", "598", "41", "90"):
        assert piece in out


def test_status_screen_survives_services_down():
    out = _text(Snapshot(at=0.0, errors=["kafka: connection refused"]))
    assert "none answered" in out and "kafka: connection refused" in out
