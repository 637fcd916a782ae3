"""The edge, fuzzed against the real ledger: mutated records (values JSON allows and PostgreSQL
refuses, garbage bytes, extreme record timestamps) interleaved with good jobs go through a real
Kafka topic and a real bridge into PostgreSQL. The bridge never exits, every record ends as
exactly one terminal ledger row, every good job succeeds, and every refusal has a DLQ copy.

The default run sends ``AGENTQ_FUZZ_RECORDS`` (1,500) records; the slow one 12,000.
"""

from __future__ import annotations

import os
import random

import pytest
from kafka import KafkaProducer
from sklearn.datasets import load_digits
from sqlalchemy import text

from tests.faults.fuzz import cases
from tests.faults.harness import dlq_reasons
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _allow_any_timestamp(settings) -> None:
    """Let the topic keep any CreateTime a client sets (Kafka 4 refuses those over an hour
    ahead by default), so the bridge sees the extreme timestamps a permissive topic would."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(**settings.kafka.client_options())
    try:
        admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, settings.kafka.jobs_topic,
            configs={"message.timestamp.after.max.ms": str((1 << 63) - 1)})])
    finally:
        admin.close()


def _send(settings, records) -> list[tuple[int, int]]:
    producer = KafkaProducer(acks="all", linger_ms=20, max_request_size=2 * 1024 * 1024,
                             **settings.kafka.client_options())
    futures = []
    try:
        for value, ts, _good in records:
            futures.append(producer.send(settings.kafka.jobs_topic, value=value,
                                         key=str(random.random()).encode(), timestamp_ms=ts))
        producer.flush(60)
        metas = [f.get(timeout=60) for f in futures]
    finally:
        producer.close(10)
    return [(m.partition, m.offset) for m in metas]


def _fuzz(stack, worker_db, n: int, seed: int) -> None:
    # Given a worker and a bridge on a fresh topic,
    s = stack.settings
    stack.worker(concurrency=2)
    bridge = stack.bridge()
    pixels = load_digits().data[:200].tolist()
    records = list(cases(n, seed, pixels))
    _allow_any_timestamp(s)
    good = sum(1 for _, _, g in records if g)
    # when the mutated records and the good jobs are produced, interleaved,
    coords = _send(s, records)

    def rows():
        with worker_db.connect() as conn:
            return conn.execute(text(
                "SELECT source_partition, source_offset, status::text, reason FROM jobs "
                "WHERE source_topic = :t"), {"t": s.kafka.jobs_topic}).all()

    def settled():
        assert bridge.alive(), "the bridge exited:\n" + stack.logs()[-3000:]
        got = rows()
        done = [r for r in got if r[2] in ("succeeded", "failed", "rejected", "expired")]
        return got if len(done) >= len(records) and len(done) == len(got) else None

    got = wait_for(settled, 600, interval_s=2.0, what=f"{len(records)} records in the ledger")
    # then the bridge is still running (it never exited on a record),
    assert bridge.alive(), stack.logs()
    # every record ended as exactly one terminal row (keyed by its partition and offset),
    by_record: dict[tuple[int, int], list] = {}
    for r in got:
        by_record.setdefault((r[0], r[1]), []).append(r)
    assert set(by_record) == set(coords), "a record has no ledger row"
    assert all(len(v) == 1 for v in by_record.values()), "a record has two ledger rows"
    # every good job succeeded, refusals have a reason,
    status = {c: by_record[c][0] for c in coords}
    for (value, _ts, is_good), c in zip(records, coords, strict=True):
        if is_good:
            assert status[c][2] == "succeeded", (value[:200], status[c])
        elif status[c][2] == "rejected":
            assert status[c][3], status[c]
    # and every refusal has its DLQ copy.
    refused = sum(1 for r in got if r[2] in ("rejected", "expired"))
    ends: dict[str, int] = {}
    for r in got:
        ends[r[2]] = ends.get(r[2], 0) + 1
    print(f"\nfuzz: {len(records)} records ({good} good, {len(records) - good} mutated) → "
          f"{ends}; bridge alive")
    assert refused > (len(records) - good) // 2
    assert sum(dlq_reasons(s, refused, timeout_s=120).values()) >= refused


def test_fuzzed_records_never_stop_the_bridge_and_each_ends_as_one_row(stack, worker_db):
    _fuzz(stack, worker_db, int(os.environ.get("AGENTQ_FUZZ_RECORDS", "1500")), seed=11)


@pytest.mark.slow
def test_twelve_thousand_fuzzed_records_against_the_real_ledger(stack, worker_db):
    _fuzz(stack, worker_db, int(os.environ.get("AGENTQ_FUZZ_RECORDS_LONG", "12000")), seed=23)
