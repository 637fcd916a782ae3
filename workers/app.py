"""The Celery app: `celery -A workers.app worker -Q cpu` (or `-Q gpu`).

``make_celery(settings)`` builds an app from the settings passed in (the bridge, the reaper and
tests call it); the module-level ``app`` is the one the ``celery -A workers.app`` command loads,
configured from the environment when Celery first reads its configuration, not at import.

JSON only, late acks, a lost worker's task is redelivered, prefetch of one batch per process.
Heavy things (database engine, ONNX sessions) are built once per pool process, at start-up, in a
``WorkerContext`` handed to each task.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from agentq import metrics
from agentq.config import Settings
from agentq.log import configure_logging
from workers import control, tasks
from workers.queues import queue_names


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.redis_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "event_serializer": "json",
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": queue_names(settings.queue_prefix)[0],
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": settings.worker.lease_s * 2},
        "worker_hijack_root_logger": False,
        # Task events for Flower and `celery events` (task-sent from the bridge, task-started /
        # -succeeded / -failed from workers); AGENTQ_TASK_EVENTS=0 turns them off.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_time_limit": settings.worker.lease_s,
        "task_soft_time_limit": max(1, settings.worker.lease_s - 10),
    }


class _Contexts:
    """The pool process's ``WorkerContext`` per app, built on first use (after the fork)."""

    def __init__(self) -> None:
        self.apps: list[Celery] = []
        self.built: dict[int, Any] = {}

    def getter(self, app: Celery) -> Any:
        self.apps.append(app)
        return lambda: self.get(app)

    def get(self, app: Celery) -> Any:
        ctx = self.built.get(id(app))
        if ctx is None:
            from workers.context import WorkerContext

            ctx = self.built[id(app)] = WorkerContext.start(settings_of(app))
        return ctx

    def close(self) -> None:
        for ctx in self.built.values():
            ctx.close()
        self.built.clear()


_contexts = _Contexts()


def settings_of(app: Celery) -> Settings:
    return app.agentq_settings  # type: ignore[attr-defined, no-any-return]


def _setup(app: Celery, settings: Settings) -> None:
    app.agentq_settings = settings  # type: ignore[attr-defined]
    tasks.register(app, _contexts.getter(app))


def make_celery(settings: Settings) -> Celery:
    app = Celery("agentq", set_as_current=False)
    app.config_from_object(celery_config(settings))
    _setup(app, settings)
    return app


# The app of the `celery -A workers.app` command. Its settings are read from the environment
# once, when Celery first loads its configuration: the command line is the edge.
app = Celery("agentq", set_as_current=False)
_setup(app, Settings())


@app.on_configure.connect
def _configure_from_env(sender: Celery, **_: Any) -> None:
    settings = Settings.from_env()
    # Before Celery's own start-up checks warn (e.g. running as root), so those are JSON too.
    configure_logging(settings.log_level, settings.log_json)
    sender.agentq_settings = settings  # type: ignore[attr-defined]
    sender.config_from_object(celery_config(settings))


@signals.worker_process_init.connect
def _init_pool_process(**_: Any) -> None:
    for a in _contexts.apps:
        if a.configured:
            s = settings_of(a)
            configure_logging(s.log_level, s.log_json)
            _contexts.get(a)


@signals.worker_process_shutdown.connect
def _close_pool_process(**_: Any) -> None:
    _contexts.close()


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    s = Settings.from_env()
    configure_logging(s.log_level, s.log_json)


@signals.worker_init.connect
def _start_metrics(sender: Any = None, **_: Any) -> None:
    """Prometheus endpoint of this worker (AGENTQ_METRICS_PORT; off by default), started in the
    parent before the pool forks so the children share its multiprocess registry."""
    worker_app = getattr(sender, "app", None)
    port = settings_of(worker_app).metrics_port if worker_app is not None else None
    metrics.start_worker_server(port)


@signals.celeryd_after_setup.connect
def _check_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """After -Q is applied: warn when the queues are not agentq's for the configured prefix."""
    worker_app = getattr(instance, "app", None)
    if worker_app is None or not hasattr(worker_app, "agentq_settings"):
        return
    consumed = list(worker_app.amqp.queues.consume_from or worker_app.amqp.queues)
    control.check_queues(consumed, settings_of(worker_app).queue_prefix)
