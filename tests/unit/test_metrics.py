"""Metrics: served on demand, and a failing hook never reaches the job that called it."""

from __future__ import annotations

import socket
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from agentq import metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_is_off_by_default_and_serves_conventional_names_when_on(monkeypatch):
    monkeypatch.delenv("AGENTQ_METRICS_PORT", raising=False)
    assert metrics.start_server() is None
    port = _free_port()
    assert metrics.start_server(port, role="test") == port
    metrics.autoscaler_state("t", {0: 5, 1: 7}, desired_workers=3, actual_workers=2,
                             desired_bridges=2, backlog_s=float("inf"), queue_depth=4)
    metrics.after_batch("digits-mlp", SimpleNamespace(succeeded=6, failed=1, expired=0,
                                                      infer_ms=3.0))
    metrics.padding("minilm-l6", {"attention_mask": np.array([[1, 1, 0, 0], [1, 1, 1, 1]])})
    metrics.batch_dispatched("digits-mlp", 8, "cpu")
    metrics.bridge_lag({("t", 0): 11})
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "agentq_desired_workers 3.0" in body
    assert "agentq_desired_bridge_replicas 2.0" in body
    assert 'agentq_kafka_lag_records{partition="1",topic="t"} 7.0' in body
    assert 'agentq_bridge_lag_records{partition="0",topic="t"} 11.0' in body
    assert 'agentq_jobs_total{model="digits-mlp",status="succeeded"}' in body
    assert "# TYPE agentq_jobs_total counter" in body
    assert 'agentq_padding_ratio_sum{model="minilm-l6"} 0.25' in body
    assert 'agentq_batch_size_jobs_count{model="digits-mlp"}' in body
    assert 'agentq_batches_dispatched_total{model="digits-mlp",queue="cpu"}' in body
    assert "agentq_celery_queue_depth_batches 4.0" in body
    assert "throughput" not in body  # a rate of agentq_jobs_total, not a gauge


def _value(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_worker_hook_observes_run_celery_and_end_to_end_latency_of_finished_jobs():
    # Given a batch of three jobs produced 5 s, 4 s and (unknown) ago, sent to Celery 1 s before
    # the worker started it, where two of them finished after 0.5 s,
    metrics._m()
    before = {k: _value(f"agentq_{k}_count", model="m-lat", **extra) for k, extra in (
        ("job_latency_seconds", {}), ("stage_seconds", {"stage": "run"}))}
    e2e_before = _value("agentq_job_latency_seconds_sum", model="m-lat")
    started, finished = 1_000_000.0, 1_000_500.0
    batch = SimpleNamespace(job_ids=["a", "b", "c"], produced_ms=[995_500.0, 996_500.0, None],
                            sent_ms=999_000.0)
    outcome = SimpleNamespace(succeeded=2, failed=1, expired=0, infer_ms=1.0,
                              finished_ids=["a", "c"])
    # when the worker hook runs,
    metrics.after_batch("m-lat", outcome, batch, started, finished)
    # then run and celery stages count each finished job, end-to-end only those with a
    # produce time,
    assert _value("agentq_stage_seconds_count", model="m-lat", stage="run") == \
        before["stage_seconds"] + 2
    assert _value("agentq_stage_seconds_sum", model="m-lat", stage="celery") >= 2.0
    assert _value("agentq_job_latency_seconds_count", model="m-lat") == \
        before["job_latency_seconds"] + 1
    assert _value("agentq_job_latency_seconds_sum", model="m-lat") - e2e_before == \
        pytest.approx(5.0)
    assert _value("agentq_jobs_total", model="m-lat", status="failed") >= 1


def test_bridge_hooks_count_rejects_by_reason_dlq_sends_and_kafka_bridge_stages():
    metrics._m()
    rej = _value("agentq_jobs_rejected_total", reason="SCHEMA")
    jobs = _value("agentq_jobs_total", model="?", status="rejected")
    metrics.jobs_rejected({("?", "rejected", "SCHEMA"): 3, ("m-b", "expired", "EXPIRED"): 1})
    assert _value("agentq_jobs_rejected_total", reason="SCHEMA") == rej + 3
    assert _value("agentq_jobs_total", model="?", status="rejected") == jobs + 3
    dlq = _value("agentq_dlq_messages_total", reason="SCHEMA")
    metrics.dlq_sent("SCHEMA")
    assert _value("agentq_dlq_messages_total", reason="SCHEMA") == dlq + 1
    metrics.batch_dispatched("m-b", 2, "cpu", [1000.0, None], [1100.0, 1200.0], 1300.0)
    assert _value("agentq_stage_seconds_count", model="m-b", stage="kafka") == 1
    assert _value("agentq_stage_seconds_sum", model="m-b", stage="bridge") == \
        pytest.approx(0.3)
    assert _value("agentq_jobs_dispatched_total", model="m-b", queue="cpu") == 2


def test_reaper_actions_count_and_terminal_ones_count_as_jobs():
    metrics._m()
    requeued = _value("agentq_reaper_jobs_total", action="requeued")
    metrics.reaper_pass(4, {"m-r": 2}, {"m-r": 1})
    assert _value("agentq_reaper_jobs_total", action="requeued") == requeued + 4
    assert _value("agentq_jobs_total", model="m-r", status="failed") == 2
    assert _value("agentq_jobs_total", model="m-r", status="expired") == 1


def test_docs_list_exactly_the_metrics_the_code_defines():
    import re
    from pathlib import Path

    defined = set()
    for metric in metrics._m().values():
        name = metric._name
        defined.add(name + "_total" if metric._type == "counter" else name)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    tables = doc.split("## Queries")[0]
    listed = set(re.findall(r"^\| `(agentq_[a-z_]+)` \|", tables, flags=re.M))
    assert listed == defined, (sorted(defined - listed), sorted(listed - defined))
    for name in defined:  # units in names: seconds, records, jobs, batches, or a ratio/flag
        assert re.search(r"_(seconds|records|jobs|batches|ratio|total|paused|workers|"
                         r"replicas)$", name), name


def test_a_failing_hook_is_logged_and_skipped(monkeypatch):
    def boom() -> None:
        raise RuntimeError("registry exploded")

    monkeypatch.setattr(metrics, "_m", boom)
    assert metrics.after_batch("digits-mlp", SimpleNamespace(succeeded=1, failed=0, expired=0,
                                                             infer_ms=1.0)) is None
    assert metrics.bridge_state(1, 2, 3, False) is None
    assert metrics.after_batch("m", object()) is None  # a wrong argument is swallowed too
    for hook, args in ((metrics.batch_dispatched, ("m", 1, "cpu", [1.0], [2.0], 3.0)),
                       (metrics.jobs_rejected, ({("m", "rejected", "SCHEMA"): 1},)),
                       (metrics.dlq_sent, ("SCHEMA",)), (metrics.reaper_pass, (1, {}, {})),
                       (metrics.bridge_lag, ({("t", 0): 1},)),
                       (metrics.bridge_lag_forget, ([("t", 0)],))):
        assert hook(*args) is None, hook.__name__
