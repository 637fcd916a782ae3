"""`agentq topics create|describe`: the agentq topics with partitions, replication factor and
retention from the settings (``AGENTQ_KAFKA_*``; a flag beats the variable). `create` is
idempotent and prints what it did for each topic."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from agentq.config import Settings

# flag -> KafkaSettings field
_OVERRIDES = {"partitions": "jobs_partitions", "dlq_partitions": "dlq_partitions",
              "replication_factor": "replication_factor",
              "min_insync_replicas": "min_insync_replicas",
              "retention_ms": "jobs_retention_ms", "dlq_retention_ms": "dlq_retention_ms"}


def register(sub: Any) -> None:
    p = sub.add_parser("topics", help="create or describe the Kafka topics", description=__doc__)
    action = p.add_subparsers(dest="action", required=True)
    c = action.add_parser("create", help="create missing topics (idempotent), print what was done")
    c.add_argument("--partitions", type=int, help="jobs topic partitions "
                   "(AGENTQ_KAFKA_JOBS_PARTITIONS)")
    c.add_argument("--dlq-partitions", type=int, help="AGENTQ_KAFKA_DLQ_PARTITIONS")
    c.add_argument("--replication-factor", type=int,
                   help="every topic (AGENTQ_KAFKA_REPLICATION_FACTOR)")
    c.add_argument("--min-insync-replicas", type=int, help="AGENTQ_KAFKA_MIN_INSYNC_REPLICAS")
    c.add_argument("--retention-ms", type=int, help="jobs topic (AGENTQ_KAFKA_JOBS_RETENTION_MS)")
    c.add_argument("--dlq-retention-ms", type=int, help="AGENTQ_KAFKA_DLQ_RETENTION_MS")
    action.add_parser("describe", help="partitions and replication factor on the cluster")
    p.set_defaults(run=run)


def kafka_settings(args: argparse.Namespace, settings: Settings) -> Any:
    changes = {field: getattr(args, flag) for flag, field in _OVERRIDES.items()
               if getattr(args, flag, None) is not None}
    return replace(settings.kafka, **changes)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from producers.topics import describe, ensure_topics

    kafka = kafka_settings(args, settings)
    if args.action == "describe":
        print(json.dumps(describe(kafka), indent=2, sort_keys=True))
        return 0
    for report in ensure_topics(kafka):
        print(report.line())
    return 0
