"""Topic administration shared by producers, the bridge, `agentq topics create` and tests.

Partitions, replication factor and retention of every agentq topic come from ``KafkaSettings``
(``AGENTQ_KAFKA_*``): nothing here assumes a single-broker cluster. Creating is idempotent; an
existing topic is left as it is and reported, with a warning when it differs from the settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError

from agentq.config import KafkaSettings
from agentq.log import get_logger

log = get_logger("agentq.topics")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicReport:
    spec: TopicSpec
    action: str  # created | exists
    partitions: int | None = None  # as found on the cluster (exists)
    replication_factor: int | None = None
    differs: tuple[str, ...] = ()

    def line(self) -> str:
        s = self.spec
        cfg = " ".join(f"{k}={v}" for k, v in sorted(s.configs.items()))
        if self.action == "created":
            return (f"created  {s.name}  partitions={s.partitions} "
                    f"replication_factor={s.replication_factor} {cfg}").rstrip()
        out = (f"exists   {s.name}  partitions={self.partitions} "
               f"replication_factor={self.replication_factor}")
        if self.differs:
            out += f"  (settings want {', '.join(self.differs)}; left as is)"
        return out


def _configs(retention_ms: int, min_isr: int) -> dict[str, str]:
    cfg = {"retention.ms": str(retention_ms)}
    if min_isr:
        cfg["min.insync.replicas"] = str(min_isr)
    return cfg


def topic_specs(settings: KafkaSettings, extra: dict[str, int] | None = None) -> list[TopicSpec]:
    """The jobs and DLQ topics as the settings describe them (plus ``extra`` name: partitions)."""
    k = settings
    specs = [
        TopicSpec(k.jobs_topic, k.jobs_partitions, k.replication_factor,
                  _configs(k.jobs_retention_ms, k.min_insync_replicas)),
        TopicSpec(k.dlq_topic, k.dlq_partitions, k.replication_factor,
                  _configs(k.dlq_retention_ms, k.min_insync_replicas)),
    ]
    specs += [TopicSpec(name, n, k.replication_factor,
                        _configs(k.jobs_retention_ms, k.min_insync_replicas))
              for name, n in (extra or {}).items()]
    return specs


def _found(admin: KafkaAdminClient, names: list[str]) -> dict[str, tuple[int, int]]:
    """name -> (partitions, replication factor) of existing topics among ``names``."""
    out = {}
    for t in admin.describe_topics(names):
        parts = t.get("partitions") or []
        if t.get("error_code", 0) or not parts:
            continue
        rf = max(len(p.get("replica_nodes") or p.get("replicas") or []) for p in parts)
        out[t["name"]] = (len(parts), rf)
    return out


def ensure_topics(settings: KafkaSettings, extra: dict[str, int] | None = None
                  ) -> list[TopicReport]:
    """Create the agentq topics that are missing (idempotent); report what was done."""
    specs = topic_specs(settings, extra)
    admin = KafkaAdminClient(client_id="agentq-admin", **settings.client_options())
    try:
        existing = set(admin.list_topics())
        new = [s for s in specs if s.name not in existing]
        if new:
            try:
                admin.create_topics({s.name: {"num_partitions": s.partitions,
                                              "replication_factor": s.replication_factor,
                                              "configs": s.configs} for s in new})
            except TopicAlreadyExistsError:  # created meanwhile by another process
                pass
        found = _found(admin, [s.name for s in specs if s.name in existing])
    finally:
        admin.close()
    reports = []
    for s in specs:
        if s.name not in existing:
            reports.append(TopicReport(s, "created"))
            log.info("topic_created", topic=s.name, partitions=s.partitions,
                     replication_factor=s.replication_factor, **{"configs": s.configs})
            continue
        parts, rf = found.get(s.name, (None, None))
        differs = tuple(f"{k}={want}" for k, want, got in (
            ("partitions", s.partitions, parts), ("replication_factor", s.replication_factor, rf))
            if got is not None and got != want)
        if differs:
            log.warning("topic_differs_from_settings", topic=s.name, partitions=parts,
                        replication_factor=rf, wanted=list(differs))
        reports.append(TopicReport(s, "exists", parts, rf, differs))
    return reports


def ensure_reply_topic(settings: KafkaSettings, name: str, partitions: int = 1,
                       retention_ms: int | None = None) -> bool:
    """Create a reply topic if missing, with its retention; returns True when it was created."""
    admin = KafkaAdminClient(client_id="agentq-admin", **settings.client_options())
    try:
        if name in set(admin.list_topics()):
            return False
        configs = _configs(retention_ms or settings.jobs_retention_ms,
                           settings.min_insync_replicas)
        try:
            admin.create_topics({name: {"num_partitions": partitions,
                                        "replication_factor": settings.replication_factor,
                                        "configs": configs}})
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        admin.close()


def delete_topics(settings: KafkaSettings, names: list[str]) -> None:
    """Delete topics that exist among ``names`` (test and benchmark clean-up)."""
    admin = KafkaAdminClient(client_id="agentq-admin", **settings.client_options())
    try:
        existing = [n for n in names if n in set(admin.list_topics())]
        if existing:
            admin.delete_topics(existing)
    finally:
        admin.close()


def describe(settings: KafkaSettings) -> dict[str, Any]:
    """Partitions and replication factor of the agentq topics as they are on the cluster."""
    admin = KafkaAdminClient(client_id="agentq-admin", **settings.client_options())
    try:
        names = [s.name for s in topic_specs(settings)]
        return {n: {"partitions": p, "replication_factor": rf}
                for n, (p, rf) in _found(admin, names).items()}
    finally:
        admin.close()
