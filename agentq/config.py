"""Typed settings, read from the environment only at the edge and passed down explicitly.

Precedence: CLI flag > environment variable > default. Every default is documented here.
Secrets (passwords inside URLs, SASL passwords) are redacted in ``repr``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

_SECRET_IN_URL = re.compile(r"(//[^:/@]*:)([^@]+)(@)")


def redact(text: str) -> str:
    """Hide the password part of ``scheme://user:password@host`` URLs."""
    return _SECRET_IN_URL.sub(r"\1***\3", text)


def _repr_redacted(obj: Any) -> str:
    parts = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("secret") and value:
            value = "***"
        elif isinstance(value, str):
            value = redact(value)
        parts.append(f"{f.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def _secret(default: str | None = None) -> Any:
    return field(default=default, metadata={"secret": True})


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:19092"
    jobs_topic: str = "agentq.jobs"
    dlq_topic: str = "agentq.jobs.dlq"
    group_id: str = "agentq-bridge"
    jobs_partitions: int = 4
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = _secret()
    ssl_cafile: str | None = None
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 60_000

    __repr__ = _repr_redacted

    def client_options(self) -> dict[str, Any]:
        """Security options shared by every kafka-python client."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self.sasl_password
        if self.ssl_cafile:
            opts["ssl_cafile"] = self.ssl_cafile
        return opts


@dataclass(frozen=True)
class Limits:
    """Input limits, checked before parsing (DESIGN §3)."""

    max_record_bytes: int = 64 * 1024
    max_json_depth: int = 8
    max_text_chars: int = 8_000
    max_pixels: int = 64


@dataclass(frozen=True)
class BridgeSettings:
    max_batch: int = 64
    max_wait_ms: int = 20
    poll_max_records: int = 2_000
    poll_timeout_ms: int = 100
    max_inflight_jobs: int = 20_000
    queue_high_watermark: int = 200
    queue_low_watermark: int = 50
    commit_interval_ms: int = 500
    # While batches already wait in the Celery queue, a batch may grow for up to this long
    # (it goes as soon as the queue is empty); 0 keeps the plain max_wait_ms window.
    busy_wait_ms: int = 1000


@dataclass(frozen=True)
class WorkerSettings:
    models_dir: Path = Path("/var/tmp/agentq/models")
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_attempts: int = 3
    lease_s: int = 120
    device: str = "auto"  # auto | cpu | cuda
    engine_mode: str = "auto"  # inprocess | shared | auto: per device, as measured (engine_client)


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    limits: Limits = field(default_factory=Limits)
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    redis_url: str = "redis://127.0.0.1:16379/0"
    database_url: str = "postgresql+psycopg://agentq_owner:agentq_owner@127.0.0.1:55432/agentq"
    worker_database_url: str = (
        "postgresql+psycopg://agentq_worker:agentq_worker@127.0.0.1:55432/agentq"
    )
    queue_prefix: str = ""  # Celery queues are <prefix>cpu and <prefix>gpu
    log_level: str = "INFO"
    log_json: bool | None = None  # None (AGENTQ_LOG_JSON unset): JSON lines unless stderr is a TTY

    __repr__ = _repr_redacted

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``AGENTQ_*`` environment variables over the defaults."""
        e = os.environ if env is None else env
        base = cls()
        kafka = _apply(base.kafka, e, "AGENTQ_KAFKA_", {"bootstrap_servers": "BOOTSTRAP"})
        limits = _apply(base.limits, e, "AGENTQ_LIMIT_")
        bridge = _apply(base.bridge, e, "AGENTQ_BRIDGE_")
        worker = _apply(base.worker, e, "AGENTQ_WORKER_", {"models_dir": "MODELS_DIR"})
        if "AGENTQ_MODELS_DIR" in e:
            worker = replace(worker, models_dir=Path(e["AGENTQ_MODELS_DIR"]))
        elif "AGENTQ_HOME" in e and "AGENTQ_WORKER_MODELS_DIR" not in e:
            worker = replace(worker, models_dir=Path(e["AGENTQ_HOME"]) / "models")
        redis_url = e.get("AGENTQ_REDIS_URL", base.redis_url)
        if e.get("AGENTQ_REDIS_PASSWORD") and "@" not in redis_url:
            redis_url = redis_url.replace("redis://", f"redis://:{e['AGENTQ_REDIS_PASSWORD']}@", 1)
        return replace(
            base,
            kafka=kafka,
            limits=limits,
            bridge=bridge,
            worker=worker,
            redis_url=redis_url,
            database_url=e.get("AGENTQ_DATABASE_URL", base.database_url),
            worker_database_url=e.get("AGENTQ_WORKER_DATABASE_URL", base.worker_database_url),
            queue_prefix=e.get("AGENTQ_QUEUE_PREFIX", base.queue_prefix),
            log_level=e.get("AGENTQ_LOG_LEVEL", base.log_level),
            log_json=_flag(e.get("AGENTQ_LOG_JSON")),
        )


def _flag(raw: str | None) -> bool | None:
    """A tri-state switch: unset or empty is ``None`` (auto), else 1/true/yes is ``True``."""
    if raw is None or not raw.strip():
        return None
    return raw.strip().lower() in ("1", "true", "yes")


def _apply(obj: Any, env: Mapping[str, str], prefix: str, aliases: dict[str, str] | None = None):
    """Override dataclass fields from ``PREFIX + FIELD_NAME`` env vars, converting by type."""
    changes: dict[str, Any] = {}
    for f in fields(obj):
        key = prefix + (aliases or {}).get(f.name, f.name.upper())
        if key not in env:
            continue
        raw = env[key]
        current = getattr(obj, f.name)
        if isinstance(current, bool):
            changes[f.name] = raw.lower() in ("1", "true", "yes")
        elif isinstance(current, int):
            changes[f.name] = int(raw)
        elif isinstance(current, Path):
            changes[f.name] = Path(raw)
        else:
            changes[f.name] = raw or None
    return replace(obj, **changes)
