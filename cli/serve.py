"""`agentq bridge`: the Kafka → Celery bridge, with the reaper thread, the reply relay and the
metrics endpoint."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from agentq.config import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("bridge", help="run the Kafka → Celery bridge", description=__doc__)
    p.add_argument("--max-batch", type=int, help="jobs per batch (AGENTQ_BRIDGE_MAX_BATCH)")
    p.add_argument("--max-wait-ms", type=int, help="batch window (AGENTQ_BRIDGE_MAX_WAIT_MS)")
    p.set_defaults(run=run)


def with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """Flags over the environment's bridge settings."""
    b = settings.bridge
    return replace(settings, bridge=replace(
        b, max_batch=args.max_batch or b.max_batch,
        max_wait_ms=b.max_wait_ms if args.max_wait_ms is None else args.max_wait_ms))


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agentq import metrics
    from agentq.shutdown import stop_on_signals
    from bridge.consumer import Bridge
    from bridge.rejects import DeadLetterUnavailable
    from ops.reaper import start_reaper
    from ops.relay import start_relay
    from producers.topics import ensure_reply_topic, ensure_topics
    from storage.db import make_engine
    from workers.app import make_celery

    settings = with_flags(settings, args)
    ensure_topics(settings.kafka)
    if settings.kafka.results_topic:
        r = settings.replies
        ensure_reply_topic(settings.kafka, settings.kafka.results_topic, r.topic_partitions,
                           r.topic_retention_ms)
    db = make_engine(settings.worker_database_url, pool_size=3, app_name="agentq-bridge")
    celery = make_celery(settings)
    stop = stop_on_signals()
    metrics.start_server(settings.metrics_port, role="bridge")  # off unless a port is set
    start_reaper(settings, db, celery, stop)  # re-enqueues jobs stuck past their lease
    start_relay(settings, db, stop)  # publishes result events from the reply outbox
    try:
        Bridge(settings, db, celery).run(stop)
    except DeadLetterUnavailable as e:  # logged by the bridge; its supervisor restarts it
        print(f"agentq bridge: stopped: {e}", file=sys.stderr)
        return 3
    finally:
        db.dispose()
    return 0
