"""`agentq check`: liveness of Kafka, Redis and PostgreSQL; exit 0 when all answer, else 1."""

from __future__ import annotations

import argparse
from typing import Any

from agentq.config import Settings, redact


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="liveness: exit 0 when Kafka, Redis, Postgres answer",
                       description=__doc__)
    p.set_defaults(run=run)


def check_all(settings: Settings) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(request_timeout_ms=5000, **settings.kafka.client_options())
        topics = admin.list_topics()
        admin.close()
        out["kafka"] = (True, f"{settings.kafka.bootstrap_servers} ({len(topics)} topics)")
    except Exception as e:  # a probe reports, it does not raise
        out["kafka"] = (False, f"{settings.kafka.bootstrap_servers}: {e}")
    try:
        import redis

        redis.Redis.from_url(settings.redis_url, socket_timeout=3).ping()
        out["redis"] = (True, redact(settings.redis_url))
    except Exception as e:  # a probe reports, it does not raise
        out["redis"] = (False, f"{redact(settings.redis_url)}: {e}")
    try:
        from sqlalchemy import text

        from storage.db import make_engine

        eng = make_engine(settings.worker_database_url, pool_size=1)
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
        out["postgres"] = (True, redact(settings.worker_database_url))
    except Exception as e:  # a probe reports, it does not raise
        out["postgres"] = (False, f"{redact(settings.worker_database_url)}: {redact(str(e))}")
    return out


def run(args: argparse.Namespace, settings: Settings) -> int:
    results = check_all(settings)
    for name, (ok, detail) in results.items():
        print(f"{name:10s} {'ok' if ok else 'FAIL'}  {detail}")
    return 0 if all(ok for ok, _ in results.values()) else 1
