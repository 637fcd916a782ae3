"""Ledger writes done by the bridge: queued rows for a batch, rejected/expired rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from storage.ledger import record_jobs


def record_batch(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert queued rows; returns the job_ids to dispatch.

    New rows are dispatched. A row that already exists is dispatched again only when it is still
    queued and came from the very same Kafka record (the bridge died between its ledger write and
    its offset commit); a duplicate job_id from another record collapses into the first.
    """
    new = record_jobs(conn, rows)
    again = [r for r in rows if r["job_id"] not in new]
    if not again:
        return new
    found = conn.execute(
        text(
            "SELECT j.job_id::text FROM jobs j JOIN unnest(CAST(:ids AS uuid[]), "
            "CAST(:parts AS int[]), CAST(:offs AS bigint[]), CAST(:topics AS text[])) "
            "AS r(job_id, p, o, t) ON j.job_id = r.job_id AND j.source_partition = r.p "
            "AND j.source_offset = r.o AND j.source_topic = r.t WHERE j.status = 'queued'"
        ),
        {"ids": [r["job_id"] for r in again], "parts": [r["source_partition"] for r in again],
         "offs": [r["source_offset"] for r in again], "topics": [r["source_topic"] for r in again]},
    )
    return new | {r[0] for r in found}
