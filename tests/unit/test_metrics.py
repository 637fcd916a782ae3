"""Metrics: served on demand, and a failing hook never reaches the job that called it."""

from __future__ import annotations

import socket
import urllib.request
from types import SimpleNamespace

import numpy as np

from agentq import metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_is_off_by_default_and_serves_the_autoscaler_gauges_when_on(monkeypatch):
    monkeypatch.delenv("AGENTQ_METRICS_PORT", raising=False)
    assert metrics.start_server() is None
    port = _free_port()
    assert metrics.start_server(port, role="test") == port
    metrics.autoscaler_state("t", {0: 5, 1: 7}, desired_workers=3, actual_workers=2,
                             desired_bridges=2, backlog_s=float("inf"), throughput=12.5,
                             queue_depth=4)
    metrics.after_batch("digits-mlp", SimpleNamespace(succeeded=6, failed=1, expired=0,
                                                      infer_ms=3.0))
    metrics.padding("minilm-l6", {"attention_mask": np.array([[1, 1, 0, 0], [1, 1, 1, 1]])})
    metrics.batch_dispatched("digits-mlp", 8)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "agentq_desired_workers 3.0" in body
    assert "agentq_desired_bridge_replicas 2.0" in body
    assert 'agentq_kafka_lag_records{partition="1",topic="t"} 7.0' in body
    assert 'agentq_jobs_total{model="digits-mlp",status="succeeded"}' in body
    assert 'agentq_padding_ratio_sum{model="minilm-l6"} 0.25' in body
    assert 'agentq_batch_size_count{model="digits-mlp"}' in body


def test_a_failing_hook_is_logged_and_skipped(monkeypatch):
    def boom() -> None:
        raise RuntimeError("registry exploded")

    monkeypatch.setattr(metrics, "_m", boom)
    assert metrics.after_batch("digits-mlp", SimpleNamespace(succeeded=1, failed=0, expired=0,
                                                             infer_ms=1.0)) is None
    assert metrics.bridge_state(1, 2, 3, False) is None
    assert metrics.after_batch("m", object()) is None  # a wrong argument is swallowed too
