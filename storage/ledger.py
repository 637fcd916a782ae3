"""Bulk writes to the job ledger: one statement per batch and state change, never one per row.

Every function takes an open connection inside the caller's transaction (``engine.begin()``), so a
status change and its results commit together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.dialects.postgresql import insert

from storage.schema import JobStatus, jobs

LIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def record_jobs(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert ledger rows (any status); duplicates by job_id are ignored.

    Returns the job_ids that were new, so a redelivered or duplicated record is not run twice.
    """
    if not rows:
        return set()
    stmt = insert(jobs).values(list(rows)).on_conflict_do_nothing(index_elements=["job_id"])
    return {r[0] for r in conn.execute(stmt.returning(jobs.c.job_id))}


def finish_jobs(
    conn: Connection,
    result_rows: Sequence[dict[str, Any]],
    finished_at: datetime,
) -> int:
    """Write results and mark their jobs succeeded, idempotently by job_id. Returns jobs updated."""
    if not result_rows:
        return 0
    insert_results(conn, result_rows)
    res = conn.execute(
        text(
            "UPDATE jobs SET status = 'succeeded', finished_at = :t, updated_at = now(), "
            "reason = NULL, error = NULL "
            "WHERE job_id = ANY(CAST(:ids AS uuid[])) AND status IN ('queued', 'running')"
        ),
        {"t": finished_at, "ids": [r["job_id"] for r in result_rows]},
    )
    return res.rowcount


INSERT_RESULTS = text(
    "INSERT INTO results (job_id, model, label, probs, embedding, extra) "
    "SELECT r.j, r.m, r.l, CAST(r.p AS real[]), CAST(r.e AS real[]), CAST(r.x AS jsonb) "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:models AS text[]), CAST(:labels AS smallint[]), "
    "CAST(:probs AS text[]), CAST(:embs AS text[]), CAST(:extras AS text[])) "
    "AS r(j, m, l, p, e, x) ON CONFLICT (job_id) DO NOTHING"
)


def _array_literal(values: Any) -> str | None:
    """A Postgres array literal for a flat sequence of floats (parsed server-side)."""
    if values is None:
        return None
    return "{" + ",".join(map("{:.9g}".format, values)) + "}"


def insert_results(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """One statement for a batch's results: arrays bound per column, expanded by ``unnest``.

    Constant SQL text (prepared once), so no per-row statement building; vectors travel as array
    literals because ``unnest`` of a 2-D array would flatten it.
    """
    conn.execute(INSERT_RESULTS, {
        "ids": [r["job_id"] for r in rows],
        "models": [r["model"] for r in rows],
        "labels": [r.get("label") for r in rows],
        "probs": [_array_literal(r.get("probs")) for r in rows],
        "embs": [_array_literal(r.get("embedding")) for r in rows],
        "extras": [None if r.get("extra") is None else json.dumps(r["extra"]) for r in rows],
    })


def end_jobs(
    conn: Connection,
    outcomes: Iterable[tuple[str, JobStatus, str, str]],
    finished_at: datetime,
) -> int:
    """Set terminal non-success outcomes: (job_id, status, reason, error) for live jobs."""
    items = list(outcomes)
    if not items:
        return 0
    res = conn.execute(
        text(
            "UPDATE jobs AS j SET status = CAST(o.status AS job_status), reason = o.reason, "
            "error = o.error, finished_at = :t, updated_at = now() "
            "FROM unnest(CAST(:ids AS uuid[]), CAST(:st AS text[]), CAST(:rs AS text[]), "
            "CAST(:er AS text[])) AS o(job_id, status, reason, error) "
            "WHERE j.job_id = o.job_id AND j.status IN ('queued', 'running')"
        ),
        {
            "t": finished_at,
            "ids": [i[0] for i in items],
            "st": [JobStatus(i[1]).value for i in items],
            "rs": [i[2] for i in items],
            "er": [i[3][:2000] for i in items],
        },
    )
    return res.rowcount


def requeue_jobs(conn: Connection, job_ids: Sequence[str], reason: str, error: str) -> int:
    """Put running jobs back to queued (a retry), keeping their attempt count."""
    if not job_ids:
        return 0
    res = conn.execute(
        text(
            "UPDATE jobs SET status = 'queued', reason = :r, error = :e, queued_at = now(), "
            "updated_at = now() WHERE job_id = ANY(CAST(:ids AS uuid[])) "
            "AND status IN ('queued', 'running')"
        ),
        {"ids": list(job_ids), "r": reason, "e": error[:2000]},
    )
    return res.rowcount
