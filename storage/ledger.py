"""The job ledger: one insert path, and one named function per status transition.

Every function takes an open connection inside the caller's transaction
(``storage.db.transaction``), so a status change and its results commit together or not at all.
Statuses travel as bound ``JobStatus`` values, never as literals in the SQL.

Shape, as profiled: each write binds one array per column and expands them with ``unnest``
server-side. The SQL text is constant (compiled and prepared once), so a batch of 256 rows costs
one round trip and no per-row statement building, unlike a multi-row ``VALUES`` list (80% of the
bridge's time once went to SQLAlchemy compiling a 64-row VALUES insert; for results, unnest was 4x
faster than VALUES for 256 digits rows and 3x for 64 embeddings).

An *attempt* is one start of inference for a job. A delivery claims its jobs with
:func:`claim_jobs`: a ``queued`` job becomes ``running`` and its attempt is counted; a job found
already ``running`` was being run by a delivery that never finished (its worker died, or the
reaper re-enqueued it), so it is a *suspect*: its attempt is counted only when it is run on its
own (:func:`count_attempt`). That way a job that kills its process uses up its own attempts and
not those of the good jobs that shared its batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from storage.schema import LIVE, JobStatus

ERROR_CHARS = 2000  # longest error text kept in the ledger

# Columns the one insert path writes (a row dict may leave any of them out but job_id, model and
# status), each with the array type it is bound as.
INSERT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("job_id", "uuid"), ("model", "text"), ("status", "job_status"), ("tenant", "text"),
    ("priority", "int"), ("input", "jsonb"), ("meta", "jsonb"), ("reason", "text"),
    ("error", "text"), ("attempts", "smallint"), ("queue", "text"), ("batch_id", "text"),
    ("source_topic", "text"), ("source_partition", "int"), ("source_offset", "bigint"),
    ("deadline_at", "timestamptz"), ("produced_at", "timestamptz"),
    ("received_at", "timestamptz"), ("queued_at", "timestamptz"), ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"), ("reply_to", "text"),
)
_JSON = {"input", "meta"}
_DEFAULTS = {"priority": 0, "attempts": 0}


def _insert_sql() -> Any:
    names = [c for c, _ in INSERT_COLUMNS]
    # jsonb travels as text (parsed server-side), the rest as arrays of their own type.
    arrays = ", ".join(f"CAST(:{c} AS {'text' if t == 'jsonb' else t}[])"
                       for c, t in INSERT_COLUMNS)
    select = ", ".join(f"CAST(r.{c} AS jsonb)" if t == "jsonb" else f"r.{c}"
                       for c, t in INSERT_COLUMNS)
    return text(f"INSERT INTO jobs ({', '.join(names)}) SELECT {select} "
                f"FROM unnest({arrays}) AS r({', '.join(names)}) "
                "ON CONFLICT (job_id) DO NOTHING RETURNING job_id::text")


INSERT_JOBS = _insert_sql()


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _column(rows: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    if name in _JSON:
        return [_json(r.get(name)) for r in rows]
    if name == "status":
        return [JobStatus(r["status"]).value for r in rows]
    if name == "error":
        return [None if r.get("error") is None else str(r["error"])[:ERROR_CHARS] for r in rows]
    default = _DEFAULTS.get(name)
    return [r.get(name) if r.get(name) is not None else default for r in rows]


def insert_jobs(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert ledger rows (any status; keys as in ``jobs``); a job_id already there is left as
    it is. Returns the job_ids that were new, so a redelivered record is not run twice."""
    if not rows:
        return set()
    params = {name: _column(rows, name) for name, _ in INSERT_COLUMNS}
    return {r[0] for r in conn.execute(INSERT_JOBS, params)}


SAME_RECORD_STILL_QUEUED = text(
    "SELECT j.job_id::text FROM jobs j JOIN unnest(CAST(:ids AS uuid[]), "
    "CAST(:parts AS int[]), CAST(:offs AS bigint[]), CAST(:topics AS text[])) "
    "AS r(job_id, p, o, t) ON j.job_id = r.job_id AND j.source_partition = r.p "
    "AND j.source_offset = r.o AND j.source_topic = r.t "
    "WHERE j.status = CAST(:queued AS job_status)"
)


def queue_jobs(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert ``queued`` rows for a batch; returns the job_ids to dispatch.

    New rows are dispatched. A row that already exists is dispatched again only when it is still
    queued and came from the very same Kafka record (the bridge died between its ledger write and
    its offset commit); a duplicate job_id from another record collapses into the first.
    """
    queued = [{**r, "status": JobStatus.QUEUED} for r in rows]
    new = insert_jobs(conn, queued)
    again = [r for r in queued if r["job_id"] not in new]
    if not again:
        return new
    found = conn.execute(SAME_RECORD_STILL_QUEUED, {
        "ids": [r["job_id"] for r in again], "parts": [r["source_partition"] for r in again],
        "offs": [r["source_offset"] for r in again], "topics": [r["source_topic"] for r in again],
        "queued": JobStatus.QUEUED.value})
    return new | {r[0] for r in found}


@dataclass(frozen=True)
class Claim:
    attempts: int
    suspect: bool  # it was already running: a previous delivery died with it


CLAIM = text(
    "WITH prev AS (SELECT job_id, status AS was FROM jobs "
    "  WHERE job_id = ANY(CAST(:ids AS uuid[])) AND status = ANY(CAST(:live AS job_status[])) "
    "  FOR UPDATE) "
    "UPDATE jobs AS j SET status = CAST(:running AS job_status), started_at = :t, "
    "  updated_at = now(), "
    "  attempts = j.attempts + CASE WHEN prev.was = CAST(:queued AS job_status) THEN 1 ELSE 0 END "
    "FROM prev WHERE j.job_id = prev.job_id "
    "RETURNING j.job_id::text, j.attempts, prev.was = CAST(:running AS job_status)"
)


def claim_jobs(conn: Connection, job_ids: Sequence[str], started_at: datetime) -> dict[str, Claim]:
    """queued|running → running; counts an attempt for those that were queued. Terminal jobs (a
    duplicate delivery) are not returned."""
    if not job_ids:
        return {}
    res = conn.execute(CLAIM, {"t": started_at, "ids": list(job_ids), "live": list(LIVE),
                               "running": JobStatus.RUNNING.value,
                               "queued": JobStatus.QUEUED.value})
    return {r[0]: Claim(int(r[1]), bool(r[2])) for r in res}


COUNT_ATTEMPT = text(
    "WITH prev AS (SELECT job_id, attempts AS was FROM jobs "
    "  WHERE job_id = CAST(:id AS uuid) AND status = CAST(:running AS job_status) FOR UPDATE) "
    "UPDATE jobs AS j SET updated_at = now(), started_at = now(), "
    "  attempts = prev.was + CASE WHEN prev.was < :lim THEN 1 ELSE 0 END "
    "FROM prev WHERE j.job_id = prev.job_id RETURNING j.attempts, prev.was < :lim"
)


def count_attempt(conn: Connection, job_id: str, max_attempts: int) -> tuple[int, bool] | None:
    """Count one attempt for a running job about to run on its own, unless it has used all of
    them. Returns (attempts, may_run), or None when the job is not running."""
    row = conn.execute(COUNT_ATTEMPT, {"id": job_id, "lim": max_attempts,
                                       "running": JobStatus.RUNNING.value}).first()
    return None if row is None else (int(row[0]), bool(row[1]))


INSERT_RESULTS = text(
    "INSERT INTO results (job_id, model, label, probs, embedding, extra) "
    "SELECT r.j, r.m, r.l, CAST(r.p AS real[]), CAST(r.e AS real[]), CAST(r.x AS jsonb) "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:models AS text[]), CAST(:labels AS smallint[]), "
    "CAST(:probs AS text[]), CAST(:embs AS text[]), CAST(:extras AS text[])) "
    "AS r(j, m, l, p, e, x) ON CONFLICT (job_id) DO NOTHING"
)

SUCCEED = text(
    "UPDATE jobs SET status = CAST(:succeeded AS job_status), finished_at = :t, "
    "updated_at = now(), "
    "reason = NULL, error = NULL "
    "WHERE job_id = ANY(CAST(:ids AS uuid[])) AND status = ANY(CAST(:live AS job_status[]))"
)


def _array_literal(values: Any) -> str | None:
    """A Postgres array literal for a flat sequence of floats (parsed server-side); vectors
    travel as literals because ``unnest`` of a 2-D array would flatten it."""
    if values is None:
        return None
    return "{" + ",".join(map("{:.9g}".format, values)) + "}"


def finish_jobs(conn: Connection, result_rows: Sequence[Mapping[str, Any]],
                finished_at: datetime) -> int:
    """running → succeeded, with the results, idempotently by job_id. Returns jobs updated."""
    if not result_rows:
        return 0
    conn.execute(INSERT_RESULTS, {
        "ids": [r["job_id"] for r in result_rows],
        "models": [r["model"] for r in result_rows],
        "labels": [r.get("label") for r in result_rows],
        "probs": [_array_literal(r.get("probs")) for r in result_rows],
        "embs": [_array_literal(r.get("embedding")) for r in result_rows],
        "extras": [_json(r.get("extra")) for r in result_rows],
    })
    res = conn.execute(SUCCEED, {"t": finished_at, "ids": [r["job_id"] for r in result_rows],
                                 "live": list(LIVE), "succeeded": JobStatus.SUCCEEDED.value})
    return res.rowcount


END = text(
    "UPDATE jobs AS j SET status = CAST(:status AS job_status), reason = o.reason, "
    "error = o.error, finished_at = :t, updated_at = now() "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:rs AS text[]), CAST(:er AS text[])) "
    "AS o(job_id, reason, error) "
    "WHERE j.job_id = o.job_id AND j.status = ANY(CAST(:live AS job_status[])) "
    "RETURNING j.job_id::text, j.model, j.input, j.tenant, j.priority, j.meta, j.deadline_at, "
    "j.source_topic, j.source_partition, j.source_offset, j.attempts, j.reason, j.error, "
    "j.reply_to"
)

Outcome = tuple[str, str, str]  # (job_id, reason, error)


def _end(conn: Connection, status: JobStatus, outcomes: Sequence[Outcome],
         finished_at: datetime) -> list[dict[str, Any]]:
    if not outcomes:
        return []
    res = conn.execute(END, {
        "t": finished_at, "status": status.value, "live": list(LIVE),
        "ids": [o[0] for o in outcomes], "rs": [o[1] for o in outcomes],
        "er": [o[2][:ERROR_CHARS] for o in outcomes]})
    return [dict(r._mapping) for r in res]


def fail_jobs(conn: Connection, outcomes: Sequence[Outcome],
              finished_at: datetime) -> list[dict[str, Any]]:
    """queued|running → failed with (job_id, reason, error). Returns, for the jobs that changed,
    what their DLQ copy needs (the v1 fields, source coordinates, attempts, reason, error)."""
    return _end(conn, JobStatus.FAILED, outcomes, finished_at)


def expire_jobs(conn: Connection, outcomes: Sequence[Outcome], finished_at: datetime) -> int:
    """queued|running → expired with (job_id, reason, error): past their deadline."""
    return len(_end(conn, JobStatus.EXPIRED, outcomes, finished_at))


REQUEUE = text(
    "UPDATE jobs AS j SET status = CAST(:queued AS job_status), reason = o.reason, "
    "error = o.error, "
    "queued_at = now(), updated_at = now() "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:rs AS text[]), CAST(:er AS text[])) "
    "AS o(job_id, reason, error) "
    "WHERE j.job_id = o.job_id AND j.status = ANY(CAST(:live AS job_status[]))"
)


def requeue_jobs(conn: Connection, outcomes: Iterable[Outcome]) -> int:
    """running → queued with (job_id, reason, error), keeping their attempts: a retry. The
    caller re-enqueues them (after a backoff); the reaper does if that publish is lost."""
    items = list(outcomes)
    if not items:
        return 0
    res = conn.execute(REQUEUE, {
        "queued": JobStatus.QUEUED.value, "live": list(LIVE), "ids": [o[0] for o in items],
        "rs": [o[1] for o in items], "er": [o[2][:ERROR_CHARS] for o in items]})
    return res.rowcount


TAKE_STUCK = text(
    "WITH stuck AS (SELECT job_id FROM jobs WHERE status = ANY(CAST(:live AS job_status[])) "
    "  AND updated_at < now() - make_interval(secs => :lease) "
    "  AND NOT (coalesce(queue, '') = ANY(CAST(:skip AS text[])) "
    "           AND NOT (status = CAST(:running AS job_status) AND attempts >= :max)) "
    "  ORDER BY updated_at LIMIT :lim FOR UPDATE SKIP LOCKED) "
    "UPDATE jobs AS j SET updated_at = now() FROM stuck WHERE j.job_id = stuck.job_id "
    "RETURNING j.job_id::text, j.model, j.input, j.status::text, j.attempts, j.queue, "
    "j.deadline_at, j.reason, j.error"
)


def take_stuck(conn: Connection, lease_s: float, limit: int = 1000, skip_queues: Sequence[str] = (),
               max_attempts: int = 1 << 15) -> list[dict[str, Any]]:
    """Live jobs not touched for ``lease_s``, locked (skipping rows another reaper holds) and
    their lease renewed, so the caller re-enqueues each once per lease. Jobs of the queues in
    ``skip_queues`` (they still hold a backlog) are left alone, except running jobs that have
    used ``max_attempts`` (the caller fails those)."""
    res = conn.execute(TAKE_STUCK, {
        "lease": float(lease_s), "lim": limit, "skip": list(skip_queues), "max": max_attempts,
        "live": list(LIVE), "running": JobStatus.RUNNING.value})
    return [dict(r._mapping) for r in res]
