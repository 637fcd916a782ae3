"""Array literals (``storage.pgarray``) read back by PostgreSQL equal what they were built from,
for the strings an edge lets through (quotes, backslashes, braces, "NULL", blanks, other scripts)
and through the ledger's insert into real rows."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from storage import pgarray
from storage.db import transaction
from storage.ledger import insert_jobs
from storage.schema import JobStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HOSTILE = ["", " ", "NULL", "null", '"', "\\", '\\"', "a,b", "{x}", "}{", "a b ", "\t\n",
           "'", "é ü ñ", "Привет", "日本語", "مرحبا", "😀", "x" * 300, '{"k":"v\\\\"}']


def read_back(conn: Any, literal: str, kind: str) -> list[Any]:
    return list(conn.execute(text(f"SELECT unnest(CAST(:a AS {kind}[]))"),
                             {"a": literal}).scalars())


def test_text_literals_round_trip_whatever_the_characters(owner_db: Any) -> None:
    rng = random.Random(7)
    alphabet = '"\\,{} NUL\'\tabcé日😀'
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(300)]
    values: list[str | None] = [*HOSTILE, None, *fuzz, None]
    with owner_db.connect() as conn:
        assert read_back(conn, pgarray.texts(values), "text") == values


def test_number_uuid_time_and_json_literals_round_trip(owner_db: Any) -> None:
    ids = [str(uuid.uuid4()) for _ in range(50)]
    ints = [0, 1, -1, 2**31 - 1, -(2**31), None, 7]
    big = [2**63 - 1, -(2**63), 0, None]
    t0 = datetime(2026, 12, 3, 13, 0, 0, 123456, UTC)
    stamps = [t0, t0, None, t0 + timedelta(microseconds=1),
              datetime(1999, 1, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30)))]
    docs = [{"pixels": [0.0, 16.0, 1.5e-7]}, None, {"text": 'quote " back \\ slash'},
            {"t": "日本語 😀", "nested": {"a": [1, {"b": None}]}}, [], "NULL"]
    with owner_db.connect() as conn:
        assert read_back(conn, pgarray.uuids(ids), "uuid") == [uuid.UUID(i) for i in ids]
        assert read_back(conn, pgarray.ints(ints), "int") == ints
        assert read_back(conn, pgarray.ints(big), "bigint") == big
        assert read_back(conn, pgarray.timestamps(stamps), "timestamptz") == stamps
        got = list(conn.execute(text("SELECT CAST(d AS jsonb) FROM unnest(CAST(:a AS text[])) d"),
                                {"a": pgarray.jsons(docs)}).scalars())
        assert got == docs
    with pytest.raises(ValueError):
        pgarray.timestamps([datetime(2026, 1, 1)])  # naive: its zone would be the server's


def test_the_ledger_insert_keeps_every_column_of_hostile_rows(owner_db: Any) -> None:
    now = datetime.now(UTC)
    rows = [{"job_id": str(uuid.uuid4()), "model": "digits-mlp", "status": JobStatus.QUEUED,
             "tenant": s or None, "priority": i - 5, "input": {"pixels": [float(i)] * 64},
             "meta": {"note": s}, "source_topic": "agentq.jobs", "source_partition": i % 3,
             "source_offset": 10**12 + i, "queued_at": now, "produced_at": None,
             "reply_to": "agentq.results" if i % 2 else None, "queue": "cpu",
             "batch_id": "b-1", "deadline_at": now + timedelta(seconds=i)}
            for i, s in enumerate(HOSTILE)]
    with transaction(owner_db) as conn:
        assert insert_jobs(conn, rows) == {r["job_id"] for r in rows}
        got = {str(r.job_id): r for r in conn.execute(text(
            "SELECT job_id, tenant, priority, input, meta, source_partition, source_offset, "
            "queued_at, produced_at, reply_to, deadline_at, status::text AS status FROM jobs "
            "WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": [r["job_id"] for r in rows]})}
    for r in rows:
        g = got[r["job_id"]]
        assert (g.tenant, g.priority, g.input, g.meta) == (r["tenant"], r["priority"],
                                                           r["input"], r["meta"])
        assert (g.source_partition, g.source_offset) == (r["source_partition"],
                                                         r["source_offset"])
        assert (g.queued_at, g.produced_at, g.deadline_at) == (now, None, r["deadline_at"])
        assert (g.reply_to, g.status) == (r["reply_to"], "queued")
