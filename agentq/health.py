"""Liveness checks of the three services, for `agentq check` and the demo."""

from __future__ import annotations

from agentq.config import Settings, redact


def check_all(settings: Settings) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(request_timeout_ms=5000, **settings.kafka.client_options())
        topics = admin.list_topics()
        admin.close()
        out["kafka"] = (True, f"{settings.kafka.bootstrap_servers} ({len(topics)} topics)")
    except Exception as e:
        out["kafka"] = (False, f"{settings.kafka.bootstrap_servers}: {e}")
    try:
        import redis

        redis.Redis.from_url(settings.redis_url, socket_timeout=3).ping()
        out["redis"] = (True, redact(settings.redis_url))
    except Exception as e:
        out["redis"] = (False, f"{redact(settings.redis_url)}: {e}")
    try:
        from sqlalchemy import text

        from storage.db import make_engine

        eng = make_engine(settings.worker_database_url, pool_size=1)
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
        out["postgres"] = (True, redact(settings.worker_database_url))
    except Exception as e:
        out["postgres"] = (False, f"{redact(settings.worker_database_url)}: {redact(str(e))}")
    return out
