"""`agentq topics create` on the live broker: what the settings say is what the cluster gets."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import InvalidReplicationFactorError

from cli.main import main
from producers.topics import delete_topics, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def kafka(services):
    tag = uuid.uuid4().hex[:8]
    k = replace(services.kafka, jobs_topic=f"agentq.test.topics-{tag}",
                dlq_topic=f"agentq.test.topics-{tag}.dlq")
    yield k
    delete_topics(k, [k.jobs_topic, k.dlq_topic])


def test_topics_get_the_partitions_and_retention_of_the_settings(kafka, monkeypatch, capsys):
    # Given topic settings from the environment and a flag,
    monkeypatch.setenv("AGENTQ_KAFKA_JOBS_TOPIC", kafka.jobs_topic)
    monkeypatch.setenv("AGENTQ_KAFKA_DLQ_TOPIC", kafka.dlq_topic)
    monkeypatch.setenv("AGENTQ_KAFKA_DLQ_PARTITIONS", "2")
    monkeypatch.setenv("AGENTQ_KAFKA_DLQ_RETENTION_MS", "7200000")
    # when `agentq topics create` runs twice,
    assert main(["topics", "create", "--partitions", "3", "--retention-ms", "3600000"]) == 0
    first = capsys.readouterr().out
    assert main(["topics", "create", "--partitions", "3"]) == 0
    second = capsys.readouterr().out
    # then it printed what it created, then that they exist,
    assert f"created  {kafka.jobs_topic}  partitions=3 replication_factor=1 " \
           "retention.ms=3600000" in first
    assert f"created  {kafka.dlq_topic}  partitions=2" in first
    assert f"exists   {kafka.jobs_topic}  partitions=3 replication_factor=1" in second
    # and the broker holds exactly that.
    admin = KafkaAdminClient(**kafka.client_options())
    try:
        parts = {t["name"]: len(t["partitions"])
                 for t in admin.describe_topics([kafka.jobs_topic, kafka.dlq_topic])}
        configs = admin.describe_configs([
            ConfigResource(ConfigResourceType.TOPIC, kafka.jobs_topic),
            ConfigResource(ConfigResourceType.TOPIC, kafka.dlq_topic)])["topic"]
    finally:
        admin.close()
    assert parts == {kafka.jobs_topic: 3, kafka.dlq_topic: 2}
    assert configs[kafka.jobs_topic]["retention.ms"]["value"] == "3600000"
    assert configs[kafka.dlq_topic]["retention.ms"]["value"] == "7200000"


def test_replication_factor_reaches_the_broker(kafka):
    # A single local broker refuses RF 2: the setting is sent, not replaced by a constant 1.
    with pytest.raises(InvalidReplicationFactorError):
        ensure_topics(replace(kafka, replication_factor=2))
