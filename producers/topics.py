"""Topic administration shared by producers, the bridge and tests."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from agentq.config import KafkaSettings


def ensure_topics(settings: KafkaSettings, extra: dict[str, int] | None = None) -> None:
    """Create the jobs and DLQ topics if missing (idempotent)."""
    wanted = {settings.jobs_topic: settings.jobs_partitions, settings.dlq_topic: 1}
    wanted.update(extra or {})
    admin = KafkaAdminClient(client_id="agentq-admin", **settings.client_options())
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, n, 1) for name, n in wanted.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def ensure_reply_topic(settings: KafkaSettings, name: str, partitions: int = 1,
                       retention_ms: int | None = None) -> bool:
    """Create a reply topic if missing, with its retention; returns True when it was created."""
    admin = KafkaAdminClient(client_id="agentq-admin", **settings.client_options())
    try:
        if name in set(admin.list_topics()):
            return False
        configs = {"retention.ms": str(retention_ms)} if retention_ms else {}
        try:
            admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
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
