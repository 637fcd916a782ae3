"""Topic specs come from the settings (no hard-coded replication factor), flags beat env."""

from __future__ import annotations

from agentq.config import Settings
from cli.main import build_parser
from cli.topics import kafka_settings
from producers.topics import TopicReport, TopicSpec, topic_specs


def test_every_topic_takes_partitions_replication_and_retention_from_settings():
    s = Settings.from_env({"AGENTQ_KAFKA_REPLICATION_FACTOR": "3",
                           "AGENTQ_KAFKA_MIN_INSYNC_REPLICAS": "2",
                           "AGENTQ_KAFKA_JOBS_PARTITIONS": "12", "AGENTQ_KAFKA_DLQ_PARTITIONS": "2",
                           "AGENTQ_KAFKA_JOBS_RETENTION_MS": "3600000",
                           "AGENTQ_KAFKA_DLQ_RETENTION_MS": "7200000"})
    jobs, dlq = topic_specs(s.kafka)
    assert (jobs.name, jobs.partitions, jobs.replication_factor) == ("agentq.jobs", 12, 3)
    assert (dlq.name, dlq.partitions, dlq.replication_factor) == ("agentq.jobs.dlq", 2, 3)
    assert jobs.configs == {"retention.ms": "3600000", "min.insync.replicas": "2"}
    assert dlq.configs["retention.ms"] == "7200000"


def test_defaults_fit_one_broker_and_leave_min_isr_to_it():
    jobs, dlq = topic_specs(Settings().kafka)
    assert jobs.replication_factor == dlq.replication_factor == 1
    assert "min.insync.replicas" not in jobs.configs


def test_flags_beat_the_environment():
    s = Settings.from_env({"AGENTQ_KAFKA_REPLICATION_FACTOR": "3"})
    args = build_parser().parse_args(["topics", "create", "--replication-factor", "2",
                                      "--partitions", "6"])
    k = kafka_settings(args, s)
    assert k.replication_factor == 2 and k.jobs_partitions == 6
    args = build_parser().parse_args(["topics", "create"])
    assert kafka_settings(args, s).replication_factor == 3


def test_report_lines_say_what_was_done():
    spec = TopicSpec("t", 4, 3, {"retention.ms": "10"})
    assert TopicReport(spec, "created").line() == \
        "created  t  partitions=4 replication_factor=3 retention.ms=10"
    line = TopicReport(spec, "exists", 2, 1, ("partitions=4", "replication_factor=3")).line()
    assert "exists   t  partitions=2 replication_factor=1" in line and "left as is" in line
