"""Typed settings, read from the environment only at the edge and passed down explicitly.

Precedence: CLI flag > environment variable > default. Every default is documented here.
Secrets (passwords inside URLs, SASL passwords) are redacted in ``repr``.

Parsing stays hand-written on purpose: ``_apply`` (a few dozen lines) converts ``PREFIX_FIELD``
variables by each frozen dataclass field's type, and every setting is checked by
tests/unit/test_config.py. pydantic-settings would add pydantic and pydantic-core (~6 MB) to the
lean runtime for the same result; the autoscaler's flags overlay this same object
(``ops.autoscale.config_from``) instead of parsing the environment a second time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

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
    # Default reply topic: when set, every job without its own ``reply_to`` replies here.
    results_topic: str | None = None
    group_id: str = "agentq-bridge"
    # Topics as `agentq topics create` (and the bridge, at start) creates them. On a real cluster
    # set AGENTQ_KAFKA_REPLICATION_FACTOR=3 and AGENTQ_KAFKA_MIN_INSYNC_REPLICAS=2.
    jobs_partitions: int = 4  # the bridges' parallelism: at most one bridge per partition
    dlq_partitions: int = 1
    replication_factor: int = 1  # one broker locally and in compose
    min_insync_replicas: int = 0  # 0: the broker's default
    jobs_retention_ms: int = 7 * 24 * 3600 * 1000  # a week of backlog survives an outage
    dlq_retention_ms: int = 30 * 24 * 3600 * 1000  # dead letters are kept for inspection
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
    # Comma-separated prefixes a job's ``reply_to`` must start with; unset = any legal topic.
    reply_topic_prefixes: str | None = None

    def reply_prefixes(self) -> tuple[str, ...]:
        raw = self.reply_topic_prefixes or ""
        return tuple(p.strip() for p in raw.split(",") if p.strip())


@dataclass(frozen=True)
class BridgeSettings:
    """``AGENTQ_BRIDGE_*``; per-model batch scales are ``AGENTQ_BRIDGE_BATCH_SCALE_<MODEL>``."""

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
    # How old the queue depth that decides the busy window may be (one Redis round trip per
    # refresh). At 250 ms a batch waited up to 250 ms after the queue had emptied: digits-mlp
    # p99 at 4,000 jobs/s offered was 468 ms at 250 and 297 ms at 20 (bench.latency_knobs).
    busy_depth_max_age_ms: int = 20
    # Token-bucketed models: when a window closes, the next longer bucket joins the batch being
    # formed only while the padding it adds (items already there × the length difference, in
    # tokens) stays within this; a larger value merges more (one batch per window at most).
    merge_pad_tokens: int = 64
    dispatch_threads: int = 3  # threads making batches durable (ledger write, then publish)
    dlq_timeout_s: float = 120.0  # a DLQ copy not acknowledged by then stops the bridge
    dlq_max_value_bytes: int = 512 * 1024  # larger DLQ copies are truncated (header says so)
    reaper: bool = True  # run the reaper thread inside the bridge
    # Touched every second by the bridge's loop; `agentq check --bridge` tests its age.
    heartbeat_file: Path | None = None
    # Batch size multiplier by model name over the catalogue's own (digits-mlp: 4).
    batch_scale: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplySettings:
    """``AGENTQ_REPLY_*``: result events after commit (the outbox relay) and ``JobClient``."""

    # Where the bridge runs its outbox relay: ``process`` (a child process it supervises, so the
    # relay never waits for the bridge's GIL), ``thread`` (inside the bridge), ``off``
    # (`agentq relay` runs elsewhere). ``1``/``0`` mean process/off.
    relay: str = "process"
    relay_batch: int = 500  # outbox rows published per relay transaction
    relay_poll_ms: int = 1000  # fallback poll when no NOTIFY arrives
    relay_publish_timeout_s: float = 30.0  # acks=all wait for one relay batch
    relay_backoff_cap_s: float = 300.0  # longest wait before retrying an unpublishable reply
    topic_prefix: str = "agentq.replies."  # JobClient's own topic: <prefix><client id>
    topic_partitions: int = 1  # partitions of a reply topic agentq creates
    topic_retention_ms: int = 3_600_000  # retention of a reply topic agentq creates
    max_outstanding: int = 100_000  # handles one JobClient holds before it refuses a submit

    def __post_init__(self) -> None:
        mode = RELAY_MODES.get(str(self.relay).strip().lower())
        if mode is None:
            raise ValueError(f"AGENTQ_REPLY_RELAY={self.relay!r}: use process, thread or off")
        object.__setattr__(self, "relay", mode)


RELAY_MODES = {"process": "process", "thread": "thread", "off": "off", "1": "process",
               "true": "process", "yes": "process", "on": "process", "0": "off",
               "false": "off", "no": "off", "none": "off", "": "off"}


@dataclass(frozen=True)
class WorkerSettings:
    models_dir: Path = Path("/var/tmp/agentq/models")
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_attempts: int = 3
    lease_s: int = 120
    device: str = "auto"  # auto | cpu | cuda
    engine_mode: str = "auto"  # inprocess | shared | auto: per device, as measured (engine.client)
    max_task_retries: int = 8  # retries of a whole batch whose engine is unavailable
    retry_backoff_s: float = 0.5  # base of the exponential backoff with full jitter
    retry_backoff_cap_s: float = 30.0


@dataclass(frozen=True)
class EngineOptions:
    """``AGENTQ_ENGINE_*``: knobs of the shared engine process (``engine_mode=shared``)."""

    n_slots: int = 16  # concurrent requests in flight; >= pool processes x threads
    slot_bytes: int = 2 << 20  # 2 MiB: a 64x128 minilm batch needs 128 KiB in, 96 KiB out
    max_batch: int = 64  # rows per merged device batch unless the registry row says otherwise
    shm_dir: Path = Path("/dev/shm")
    run_dir: Path | None = None  # default: <tmp>/agentq-engine-<watch_pid>
    watch_pid: int = 0  # the engine exits when this process is gone (0: the starting client)
    threads: int = 0  # batches run at once (runner threads); 0 = one per CPU, 1 on CUDA
    start_timeout_s: float = 60.0
    request_timeout_s: float = 120.0
    slot_wait_s: float = 10.0


@dataclass(frozen=True)
class ScalingConfig:
    """``AGENTQ_AUTOSCALE_*`` (flags of `agentq autoscale` win)."""

    min_workers: int = 1
    max_workers: int = 8
    target_drain_s: float = 30.0  # drain the backlog within this time
    scale_down_window_s: float = 60.0  # stabilisation window before any scale-down
    gain_settle_s: float = 10.0  # wait this long after a scale-up before judging its gain
    min_gain_fraction: float = 0.25  # of the expected gain; below it the pool is saturated
    saturation_hold_s: float = 120.0  # keep the saturation cap this long
    assumed_per_worker_jobs_s: float = 50.0  # per-worker rate before any was measured
    tolerance: float = 0.1  # fraction of a worker ignored when rounding up
    min_bridges: int = 1
    max_partitions: int = 4  # partitions of the jobs topic (bridges never exceed it)
    bridge_jobs_s: float = 5_000.0  # what one bridge moves per second


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    limits: Limits = field(default_factory=Limits)
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    replies: ReplySettings = field(default_factory=ReplySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    engine: EngineOptions = field(default_factory=EngineOptions)
    autoscale: ScalingConfig = field(default_factory=ScalingConfig)
    # Queue pins by model name, from AGENTQ_ROUTE_<MODEL>=cpu|gpu (e.g. AGENTQ_ROUTE_MINILM_L6).
    routes: Mapping[str, str] = field(default_factory=dict)
    metrics_port: int = 0  # Prometheus endpoint of bridge, workers, autoscaler; 0 = off
    redis_url: str = "redis://127.0.0.1:16379/0"
    database_url: str = "postgresql+psycopg://agentq_owner:agentq_owner@127.0.0.1:55432/agentq"
    worker_database_url: str = (
        "postgresql+psycopg://agentq_worker:agentq_worker@127.0.0.1:55432/agentq"
    )
    queue_prefix: str = ""  # Celery queues are <prefix>cpu and <prefix>gpu
    task_events: bool = True  # Celery task events (Flower, `celery events`); AGENTQ_TASK_EVENTS
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
        scales = {m: int(v) for m, v in _by_model(e, "AGENTQ_BRIDGE_BATCH_SCALE_").items()}
        bridge = replace(bridge, batch_scale=scales)
        worker = _apply(base.worker, e, "AGENTQ_WORKER_", {"models_dir": "MODELS_DIR"})
        if "AGENTQ_MODELS_DIR" in e:
            worker = replace(worker, models_dir=Path(e["AGENTQ_MODELS_DIR"]))
        elif "AGENTQ_HOME" in e and "AGENTQ_WORKER_MODELS_DIR" not in e:
            worker = replace(worker, models_dir=Path(e["AGENTQ_HOME"]) / "models")
        redis_url = with_password(e.get("AGENTQ_REDIS_URL", base.redis_url),
                                  e.get("AGENTQ_REDIS_PASSWORD"))
        return replace(
            base,
            kafka=kafka,
            limits=limits,
            bridge=bridge,
            replies=_apply(base.replies, e, "AGENTQ_REPLY_"),
            worker=worker,
            engine=_apply(base.engine, e, "AGENTQ_ENGINE_"),
            autoscale=_apply(base.autoscale, e, "AGENTQ_AUTOSCALE_"),
            routes=_by_model(e, "AGENTQ_ROUTE_"),
            metrics_port=int(e.get("AGENTQ_METRICS_PORT", "0") or 0),
            redis_url=redis_url,
            database_url=e.get("AGENTQ_DATABASE_URL", base.database_url),
            worker_database_url=e.get("AGENTQ_WORKER_DATABASE_URL", base.worker_database_url),
            queue_prefix=e.get("AGENTQ_QUEUE_PREFIX", base.queue_prefix),
            task_events=_flag(e.get("AGENTQ_TASK_EVENTS")) is not False,
            log_level=e.get("AGENTQ_LOG_LEVEL", base.log_level),
            log_json=_flag(e.get("AGENTQ_LOG_JSON")),
        )


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` as its userinfo, URL-escaped (``@``, ``/``, ``:``, ``%`` and the
    rest), unless the URL already carries credentials; redis-py and kombu unescape it."""
    if not password:
        return url
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{parts.netloc}"))


def _by_model(env: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``PREFIX<MODEL>=value`` variables by model name (``MINILM_L6`` is ``minilm-l6``)."""
    return {k[len(prefix):].lower().replace("_", "-"): v for k, v in env.items()
            if k.startswith(prefix) and len(k) > len(prefix)}


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
        if f.name == "batch_scale" or isinstance(current, Mapping):
            continue  # read by model name (_by_model)
        if isinstance(current, bool):
            changes[f.name] = raw.lower() in ("1", "true", "yes")
        elif isinstance(current, int):
            changes[f.name] = int(raw)
        elif isinstance(current, float):
            changes[f.name] = float(raw)
        elif isinstance(current, Path) or (current is None and "Path" in str(f.type)):
            changes[f.name] = Path(raw) if raw else None
        else:
            changes[f.name] = raw or None
    return replace(obj, **changes)
