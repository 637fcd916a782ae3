"""The Celery app: `celery -A workers.app worker -Q cpu` (or `-Q gpu`).

JSON only, late acks, a lost worker's task is redelivered, prefetch of one batch per process.
Heavy things (database engine, ONNX sessions) are built once per pool process, at start-up.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from agentq.config import Settings
from agentq.log import configure_logging


def make_celery(settings: Settings) -> Celery:
    app = Celery("agentq", broker=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.worker.lease_s * 2},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_time_limit=settings.worker.lease_s,
        task_soft_time_limit=max(1, settings.worker.lease_s - 10),
    )
    app.agentq_settings = settings  # type: ignore[attr-defined]
    return app


settings = Settings.from_env()
app = make_celery(settings)
_context: dict[str, Any] = {}


def worker_context() -> Any:
    """The per-process context (engine, database), built on first use in each pool process."""
    ctx = _context.get("ctx")
    if ctx is None:
        from workers.context import WorkerContext

        ctx = _context["ctx"] = WorkerContext.start(settings)
    return ctx


@signals.worker_process_init.connect
def _init_pool_process(**_: Any) -> None:
    configure_logging(settings.log_level, settings.log_json)
    worker_context()


@signals.worker_process_shutdown.connect
def _close_pool_process(**_: Any) -> None:
    ctx = _context.pop("ctx", None)
    if ctx is not None:
        ctx.close()


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(settings.log_level, settings.log_json)


@signals.worker_init.connect
def _start_metrics(**_: Any) -> None:
    """Prometheus endpoint of this worker (AGENTQ_METRICS_PORT; off by default), started in the
    parent before the pool forks so the children share its multiprocess registry."""
    from agentq.metrics import start_worker_server

    start_worker_server()
