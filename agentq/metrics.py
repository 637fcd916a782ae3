"""Prometheus metrics for the bridge, the workers and the autoscaler.

Every hook is safe: an error inside one is logged once and skipped, never raised into a job.
The HTTP endpoint is off unless a port is given (``AGENTQ_METRICS_PORT``; 0 = off), so tests and
several processes on one host do not collide. Celery prefork workers use prometheus-client's
multiprocess mode: ``start_worker_server`` (run in the parent before the pool forks) points
``PROMETHEUS_MULTIPROC_DIR`` at a private directory and serves the aggregate of all children.

prometheus-client is imported lazily, on the first hook call, because multiprocess mode must be
chosen before the first metric exists.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from agentq.log import get_logger

log = get_logger("agentq.metrics")
F = TypeVar("F", bound=Callable[..., Any])
_metrics: dict[str, Any] = {}
_failed: set[str] = set()
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def safe(fn: F) -> F:
    """Run a hook; on any error log it (once per hook) and return None."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # a metrics failure must never reach a job
            if fn.__name__ not in _failed:
                _failed.add(fn.__name__)
                log.warning("metrics_hook_failed", hook=fn.__name__, error=str(e)[:200])
            return None

    return wrapper  # type: ignore[return-value]


def _m() -> dict[str, Any]:
    if _metrics:
        return _metrics
    from prometheus_client import Counter, Gauge, Histogram

    multi = "PROMETHEUS_MULTIPROC_DIR" in os.environ
    gauge_kw: dict[str, Any] = {"multiprocess_mode": "livesum"} if multi else {}
    _metrics.update(
        lag=Gauge("agentq_kafka_lag_records", "Records not yet consumed, per partition",
                  ["topic", "partition"]),
        backlog_s=Gauge("agentq_backlog_seconds", "Backlog ÷ measured drain rate"),
        queue_depth=Gauge("agentq_celery_queue_depth", "Batches waiting in Celery queues"),
        inflight=Gauge("agentq_bridge_inflight_jobs",
                       "Jobs dispatched by this bridge and not yet terminal (upper bound)"),
        inflight_cap=Gauge("agentq_bridge_inflight_cap", "Cap on in-flight jobs per bridge"),
        paused=Gauge("agentq_bridge_paused", "1 while the bridge pauses its partitions"),
        batch_size=Histogram("agentq_batch_size", "Jobs per dispatched batch", ["model"],
                             buckets=BATCH_BUCKETS),
        padding=Histogram("agentq_padding_ratio", "Padding tokens ÷ all tokens per batch",
                          ["model"], buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)),
        infer=Histogram("agentq_inference_seconds", "Engine time per batch", ["model"],
                        buckets=LATENCY_BUCKETS),
        outcomes=Counter("agentq_jobs_total", "Jobs by terminal outcome", ["model", "status"]),
        duplicates=Counter("agentq_duplicate_jobs_total",
                           "Jobs sent again with the same job_id and content (collapsed)",
                           ["model"]),
        rejects=Counter("agentq_rejected_records_total", "Records refused at the edge, by reason",
                        ["reason"]),
        desired_workers=Gauge("agentq_desired_workers", "Worker concurrency the autoscaler wants"),
        actual_workers=Gauge("agentq_actual_workers", "Worker concurrency observed", **gauge_kw),
        desired_bridges=Gauge("agentq_desired_bridge_replicas",
                              "Bridge replicas wanted (≤ partitions with lag)"),
        throughput=Gauge("agentq_throughput_jobs_per_second", "Measured drain rate"),
    )
    return _metrics


def port_from_env(env: Mapping[str, str] | None = None) -> int:
    e = os.environ if env is None else env
    try:
        return int(e.get("AGENTQ_METRICS_PORT", "0") or 0)
    except ValueError:
        return 0


@safe
def start_server(port: int | None = None, role: str = "agentq") -> int | None:
    """Serve /metrics on ``port`` (default from the environment); None when off."""
    port = port_from_env() if port is None else port
    if not port:
        return None
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    registry: Any = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    _m()
    start_http_server(port, registry=registry)
    log.info("metrics_listening", role=role, port=port)
    return port


def start_worker_server(port: int | None = None) -> int | None:
    """In a Celery parent process, before forking: multiprocess mode, then serve."""
    port = port_from_env() if port is None else port
    if not port:
        return None
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR",
                          tempfile.mkdtemp(prefix="agentq-metrics-"))
    return start_server(port, role="worker")


@safe
def bridge_state(queue_depth: int, inflight: int, cap: int, paused: bool) -> None:
    m = _m()
    m["queue_depth"].set(queue_depth)
    m["inflight"].set(inflight)
    m["inflight_cap"].set(cap)
    m["paused"].set(1 if paused else 0)


@safe
def batch_dispatched(model: str, size: int) -> None:
    _m()["batch_size"].labels(model).observe(size)


@safe
def duplicates(model: str, n: int) -> None:
    if n > 0:
        _m()["duplicates"].labels(model).inc(n)


@safe
def rejected(reason: str) -> None:
    _m()["rejects"].labels(reason).inc()


@safe
def jobs_ended(model: str, counts: Mapping[str, int]) -> None:
    c = _m()["outcomes"]
    for status, n in counts.items():
        if n:
            c.labels(model, status).inc(n)


@safe
def after_batch(model: str, outcome: Any) -> None:
    """Worker hook at the end of a batch: outcomes by status and inference time."""
    jobs_ended(model, {"succeeded": outcome.succeeded, "failed": outcome.failed,
                       "expired": outcome.expired})
    if outcome.infer_ms:
        _m()["infer"].labels(model).observe(outcome.infer_ms / 1000)


@safe
def padding(model: str, feeds: Mapping[str, Any]) -> None:
    """Worker hook after inference: share of padding in a token batch (text models only)."""
    mask: Any = feeds.get("attention_mask")
    size = int(mask.size) if mask is not None else 0
    if size:
        _m()["padding"].labels(model).observe(1.0 - float(mask.sum()) / size)


@safe
def autoscaler_state(topic: str, lags: Mapping[int, int], desired_workers: int,
                     actual_workers: int | None, desired_bridges: int, backlog_s: float,
                     throughput: float, queue_depth: int) -> None:
    m = _m()
    for p, lag in lags.items():
        m["lag"].labels(topic, str(p)).set(lag)
    m["desired_workers"].set(desired_workers)
    if actual_workers is not None:
        m["actual_workers"].set(actual_workers)
    m["desired_bridges"].set(desired_bridges)
    m["backlog_s"].set(backlog_s if backlog_s != float("inf") else 1e9)
    m["throughput"].set(throughput)
    m["queue_depth"].set(queue_depth)
