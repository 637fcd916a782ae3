"""Prometheus metrics for the bridge, the workers, the reaper and the autoscaler.

Named by Prometheus conventions (``agentq_<what>_<unit>``, counters ``_total``); every metric is
listed in docs/metrics.md. Throughput is ``rate(agentq_jobs_total[1m])``, latency quantiles are
``histogram_quantile`` over ``agentq_job_latency_seconds`` and ``agentq_stage_seconds``.

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from agentq.log import get_logger

log = get_logger("agentq.metrics")
F = TypeVar("F", bound=Callable[..., Any])
_metrics: dict[str, Any] = {}
_failed: set[str] = set()
# Seconds: a digits batch runs in ~1 ms; an end-to-end job under backlog can wait minutes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                   60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# agentq_stage_seconds{stage}: where a job's time goes (the ledger keeps the same per job in SQL).
STAGES = ("kafka", "bridge", "celery", "run")


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
        # Counters (use rate()/increase()); prometheus-client appends _total.
        jobs=Counter("agentq_jobs", "Jobs that reached a terminal status (rejected and expired "
                     "at the edge by bridges; succeeded, failed, expired by workers; failed, "
                     "expired by the reaper)", ["model", "status"]),
        rejected=Counter("agentq_jobs_rejected", "Records the bridge refused at the edge, by "
                         "reason (EXPIRED included)", ["reason"]),
        dlq=Counter("agentq_dlq_messages", "Copies sent to the dead-letter topic, by reason",
                    ["reason"]),
        duplicates=Counter("agentq_duplicate_jobs", "Jobs sent again with the same job_id and "
                           "content (collapsed into the first)", ["model"]),
        reaper=Counter("agentq_reaper_jobs", "Stuck jobs the reaper acted on, by action "
                       "(requeued, failed, expired)", ["action"]),
        dispatched=Counter("agentq_jobs_dispatched", "Jobs the bridge made durable and "
                           "published to Celery", ["model", "queue"]),
        batches=Counter("agentq_batches_dispatched", "Batches the bridge published to Celery",
                        ["model", "queue"]),
        # Histograms.
        batch_size=Histogram("agentq_batch_size_jobs", "Jobs per dispatched batch", ["model"],
                             buckets=BATCH_BUCKETS),
        latency=Histogram("agentq_job_latency_seconds", "End to end, produced (Kafka record "
                          "time) to finished, of each job that succeeded", ["model"],
                          buckets=LATENCY_BUCKETS),
        stage=Histogram("agentq_stage_seconds", "Time per job in each stage: kafka (produced to "
                        "received by the bridge), bridge (received to published to Celery), "
                        "celery (published to started by a worker), run (started to finished)",
                        ["model", "stage"], buckets=LATENCY_BUCKETS),
        infer=Histogram("agentq_inference_seconds", "Engine time per batch", ["model"],
                        buckets=LATENCY_BUCKETS),
        padding=Histogram("agentq_padding_ratio", "Padding tokens ÷ all tokens per batch",
                          ["model"], buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)),
        # Gauges: the bridge's state.
        queue_depth=Gauge("agentq_celery_queue_depth_batches", "Batches waiting in the Celery "
                          "queues"),
        inflight=Gauge("agentq_bridge_inflight_jobs",
                       "Jobs dispatched by this bridge and not yet terminal (upper bound)"),
        inflight_cap=Gauge("agentq_bridge_inflight_cap_jobs", "Cap on in-flight jobs per bridge"),
        paused=Gauge("agentq_bridge_paused", "1 while the bridge pauses its partitions"),
        bridge_lag=Gauge("agentq_bridge_lag_records", "Records behind the high watermark on each "
                         "partition this bridge owns (position-based)", ["topic", "partition"]),
        # Gauges: the autoscaler's view.
        lag=Gauge("agentq_kafka_lag_records", "Records not yet committed by the bridges' group, "
                  "per partition (the autoscaler's reading)", ["topic", "partition"]),
        backlog_s=Gauge("agentq_backlog_seconds", "Backlog ÷ measured drain rate"),
        desired_workers=Gauge("agentq_desired_workers", "Worker concurrency the autoscaler wants"),
        actual_workers=Gauge("agentq_actual_workers", "Worker concurrency observed", **gauge_kw),
        desired_bridges=Gauge("agentq_desired_bridge_replicas",
                              "Bridge replicas wanted (≤ partitions with lag)"),
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
def batch_dispatched(model: str, size: int, queue: str = "", produced_ms: Sequence[Any] = (),
                     received_ms: Sequence[float] = (), published_ms: float | None = None) -> None:
    """Bridge hook after a batch is durable and published: counts, size, kafka/bridge stages."""
    m = _m()
    m["batch_size"].labels(model).observe(size)
    m["batches"].labels(model, queue).inc()
    m["dispatched"].labels(model, queue).inc(size)
    kafka, bridge = m["stage"].labels(model, "kafka"), m["stage"].labels(model, "bridge")
    for p, r in zip(produced_ms, received_ms, strict=False):
        if p is not None:
            kafka.observe(max(0.0, (r - p) / 1000))
        if published_ms is not None:
            bridge.observe(max(0.0, (published_ms - r) / 1000))


@safe
def jobs_rejected(counts: Mapping[tuple[str, str, str], int]) -> None:
    """Bridge hook: refused records by (model, status, reason); unknown models count as "?"."""
    m = _m()
    for (model, status, reason), n in counts.items():
        m["jobs"].labels(model, status).inc(n)
        m["rejected"].labels(reason).inc(n)


@safe
def duplicates(model: str, n: int) -> None:
    if n > 0:
        _m()["duplicates"].labels(model).inc(n)


@safe
def dlq_sent(reason: str, n: int = 1) -> None:
    _m()["dlq"].labels(reason).inc(n)


@safe
def reaper_pass(requeued: int, failed: Mapping[str, int], expired: Mapping[str, int]) -> None:
    """Reaper hook: actions by kind; failed/expired by model also count as terminal jobs."""
    m = _m()
    if requeued:
        m["reaper"].labels("requeued").inc(requeued)
    for action, by_model in (("failed", failed), ("expired", expired)):
        for model, n in by_model.items():
            if n:
                m["reaper"].labels(action).inc(n)
                m["jobs"].labels(model, action).inc(n)


@safe
def rejected(reason: str) -> None:
    _m()["rejects"].labels(reason).inc()


@safe
def jobs_ended(model: str, counts: Mapping[str, int]) -> None:
    c = _m()["jobs"]
    for status, n in counts.items():
        if n:
            c.labels(model, status).inc(n)


@safe
def after_batch(model: str, outcome: Any, batch: Any = None, started_ms: float | None = None,
                finished_ms: float | None = None) -> None:
    """Worker hook at the end of a batch: outcomes by status, inference time, and the celery
    and run stages plus end-to-end latency of the jobs that succeeded."""
    jobs_ended(model, {"succeeded": outcome.succeeded, "failed": outcome.failed,
                       "expired": outcome.expired})
    m = _m()
    if outcome.infer_ms:
        m["infer"].labels(model).observe(outcome.infer_ms / 1000)
    if batch is None or started_ms is None or finished_ms is None:
        return
    done = set(getattr(outcome, "finished_ids", ()))
    run = m["stage"].labels(model, "run")
    celery = m["stage"].labels(model, "celery")
    latency = m["latency"].labels(model)
    produced = batch.produced_ms or [None] * len(batch.job_ids)
    for job_id, p in zip(batch.job_ids, produced, strict=False):
        if job_id not in done:
            continue
        run.observe(max(0.0, (finished_ms - started_ms) / 1000))
        if batch.sent_ms is not None:
            celery.observe(max(0.0, (started_ms - batch.sent_ms) / 1000))
        if p is not None:
            latency.observe(max(0.0, (finished_ms - p) / 1000))


@safe
def padding(model: str, feeds: Mapping[str, Any]) -> None:
    """Worker hook after inference: share of padding in a token batch (text models only)."""
    mask: Any = feeds.get("attention_mask")
    size = int(mask.size) if mask is not None else 0
    if size:
        _m()["padding"].labels(model).observe(1.0 - float(mask.sum()) / size)


@safe
def bridge_lag(topic_lags: Mapping[tuple[str, int], int]) -> None:
    g = _m()["bridge_lag"]
    for (topic, partition), lag in topic_lags.items():
        g.labels(topic, str(partition)).set(lag)


@safe
def bridge_lag_forget(partitions: Sequence[tuple[str, int]]) -> None:
    """Drop the lag of partitions this bridge no longer owns (another bridge reports them)."""
    g = _m()["bridge_lag"]
    for topic, partition in partitions:
        try:
            g.remove(topic, str(partition))
        except KeyError:  # never reported
            pass


@safe
def autoscaler_state(topic: str, lags: Mapping[int, int], desired_workers: int,
                     actual_workers: int | None, desired_bridges: int, backlog_s: float,
                     queue_depth: int) -> None:
    m = _m()
    for p, lag in lags.items():
        m["lag"].labels(topic, str(p)).set(lag)
    m["desired_workers"].set(desired_workers)
    if actual_workers is not None:
        m["actual_workers"].set(actual_workers)
    m["desired_bridges"].set(desired_bridges)
    m["backlog_s"].set(backlog_s if backlog_s != float("inf") else 1e9)
    m["queue_depth"].set(queue_depth)
