"""`agentq check`: exit 0 when Kafka, Redis and PostgreSQL answer, else 1.

`agentq check --bridge`: exit 0 while the bridge's heartbeat file (``AGENTQ_BRIDGE_HEARTBEAT_FILE``,
touched every second by its loop) is younger than ``--max-age-s``: the health check of the bridge
process itself, not of its dependencies. Workers: ``celery -A workers.app inspect ping``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agentq.config import Settings, redact


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="liveness: exit 0 when Kafka, Redis, Postgres answer "
                       "(--bridge: when this host's bridge loop is turning)", description=__doc__)
    p.add_argument("--bridge", action="store_true",
                   help="check the bridge's heartbeat file instead of the dependencies")
    p.add_argument("--heartbeat-file", type=Path,
                   help="default AGENTQ_BRIDGE_HEARTBEAT_FILE")
    p.add_argument("--max-age-s", type=float, default=30.0,
                   help="oldest heartbeat that still counts as alive (default 30)")
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


def check_bridge(path: Path | None, max_age_s: float) -> tuple[bool, str]:
    from bridge.vitals import heartbeat_age_s

    if path is None:
        return False, "no heartbeat file: set AGENTQ_BRIDGE_HEARTBEAT_FILE (or --heartbeat-file)"
    age = heartbeat_age_s(path)
    if age is None:
        return False, f"{path}: no heartbeat yet"
    return age <= max_age_s, f"{path}: last beat {age:.1f} s ago (limit {max_age_s:g} s)"


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.bridge:
        ok, detail = check_bridge(args.heartbeat_file or settings.bridge.heartbeat_file,
                                  args.max_age_s)
        print(f"bridge     {'ok' if ok else 'FAIL'}  {detail}")
        return 0 if ok else 1
    results = check_all(settings)
    for name, (ok, detail) in results.items():
        print(f"{name:10s} {'ok' if ok else 'FAIL'}  {detail}")
    return 0 if all(ok for ok, _ in results.values()) else 1
