"""The job ledger: one insert path, and one named function per status transition.

Every function takes an open connection inside the caller's transaction
(``storage.db.transaction``), so a status change and its results commit together or not at all.
Statuses travel as bound ``JobStatus`` values, never as literals in the SQL.

Shape, as profiled: each write binds one array per column and expands them with ``unnest``
server-side. The SQL text is constant (compiled and prepared once), so a batch of 256 rows costs
one round trip and no per-row statement building, unlike a multi-row ``VALUES`` list (80% of the
bridge's time once went to SQLAlchemy compiling a 64-row VALUES insert; for results, unnest was 4x
faster than VALUES for 256 digits rows and 3x for 64 embeddings).

An *attempt* is one start of inference for a job. A delivery claims its batch
(``storage.batches.claim_batch``): one ``batches`` row, while the jobs stay ``queued`` in
``jobs``, held by that claim; the write that ends a held job (``finish_jobs``, ``fail_jobs``,
``requeue_jobs`` with the claim's ``Hold``) counts its attempt and records its start. A job found
held by a delivery that never finished (its worker died, or the reaper re-enqueued it) is a
*suspect*: its attempt is counted only when it is run on its own
(``storage.batches.count_attempt``). That way a job that kills its process uses up its own
attempts and not those of the good jobs that shared its batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from storage import pgarray
from storage.batches import Hold
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


_LITERAL: dict[str, Callable[[Sequence[Any]], str]] = {
    "uuid": pgarray.uuids, "int": pgarray.ints, "smallint": pgarray.ints,
    "bigint": pgarray.ints, "timestamptz": pgarray.timestamps}


def _literal(rows: Sequence[Mapping[str, Any]], name: str, kind: str) -> str:
    """The array literal of one column (``storage.pgarray``): the hot insert's parameters."""
    if kind == "jsonb":
        return pgarray.jsons([r.get(name) for r in rows])
    render = _LITERAL.get(kind, pgarray.texts)
    return render(_column(rows, name))


def insert_jobs(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert ledger rows (any status; keys as in ``jobs``); a job_id already there is left as
    it is. Returns the job_ids that were new, so a redelivered record is not run twice."""
    if not rows:
        return set()
    params = {name: _literal(rows, name, kind) for name, kind in INSERT_COLUMNS}
    return {r[0] for r in conn.execute(INSERT_JOBS, params)}


# For rows whose job_id was already there: did they come from the very same record, is that
# job still queued, and is their content (everything but the job_id) the same?
EXISTING = text(
    "SELECT j.job_id::text, "
    "  (j.source_topic = r.t AND j.source_partition = r.p AND j.source_offset = r.o), "
    "  j.status = CAST(:queued AS job_status), "
    "  (j.model = r.m AND j.tenant IS NOT DISTINCT FROM r.te "
    "   AND j.input IS NOT DISTINCT FROM CAST(r.i AS jsonb) "
    "   AND j.meta IS NOT DISTINCT FROM CAST(r.me AS jsonb) AND j.priority = r.pr "
    "   AND j.deadline_at IS NOT DISTINCT FROM r.d) "
    "FROM jobs j JOIN unnest(CAST(:ids AS uuid[]), CAST(:topics AS text[]), "
    "  CAST(:parts AS int[]), CAST(:offs AS bigint[]), CAST(:models AS text[]), "
    "  CAST(:tenants AS text[]), CAST(:inputs AS text[]), CAST(:metas AS text[]), "
    "  CAST(:prios AS int[]), CAST(:deadlines AS timestamptz[])) "
    "  AS r(job_id, t, p, o, m, te, i, me, pr, d) ON j.job_id = r.job_id"
)


# A replayed record (``agentq dlq replay``) brings a failed, rejected or expired job back as a new
# attempt: the row is queued again with the record's content and coordinates, once.
REPLAY = text(
    "UPDATE jobs AS j SET status = CAST(:queued AS job_status), model = r.m, tenant = r.te, "
    "  input = CAST(r.i AS jsonb), meta = CAST(r.me AS jsonb), priority = r.pr, "
    "  deadline_at = r.d, source_topic = r.t, source_partition = r.p, source_offset = r.o, "
    "  queue = r.q, batch_id = r.b, produced_at = r.pa, received_at = r.ra, queued_at = r.qa, "
    "  reason = NULL, error = NULL, finished_at = NULL, started_at = NULL, dlq_at = NULL, "
    "  attempts = 0, replays = j.replays + 1, updated_at = now() "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:models AS text[]), CAST(:tenants AS text[]), "
    "  CAST(:inputs AS text[]), CAST(:metas AS text[]), CAST(:prios AS int[]), "
    "  CAST(:deadlines AS timestamptz[]), CAST(:topics AS text[]), CAST(:parts AS int[]), "
    "  CAST(:offs AS bigint[]), CAST(:queues AS text[]), CAST(:batches AS text[]), "
    "  CAST(:produced AS timestamptz[]), CAST(:received AS timestamptz[]), "
    "  CAST(:queued_at AS timestamptz[])) "
    "  AS r(job_id, m, te, i, me, pr, d, t, p, o, q, b, pa, ra, qa) "
    "WHERE j.job_id = r.job_id AND j.status = ANY(CAST(:ended AS job_status[])) "
    "RETURNING j.job_id::text"
)
_REPLAYABLE = [JobStatus.FAILED.value, JobStatus.REJECTED.value, JobStatus.EXPIRED.value]


def _replay(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    if not rows:
        return set()
    c = {name: _column(rows, name) for name in (
        "job_id", "model", "tenant", "input", "meta", "priority", "deadline_at",
        "source_topic", "source_partition", "source_offset", "queue", "batch_id",
        "produced_at", "received_at", "queued_at")}
    res = conn.execute(REPLAY, {
        "ids": c["job_id"], "models": c["model"], "tenants": c["tenant"], "inputs": c["input"],
        "metas": c["meta"], "prios": c["priority"], "deadlines": c["deadline_at"],
        "topics": c["source_topic"], "parts": c["source_partition"],
        "offs": c["source_offset"], "queues": c["queue"], "batches": c["batch_id"],
        "produced": c["produced_at"], "received": c["received_at"], "queued_at": c["queued_at"],
        "queued": JobStatus.QUEUED.value, "ended": _REPLAYABLE})
    return {r[0] for r in res}


@dataclass(frozen=True)
class Queued:
    """What ``queue_jobs`` decided for a batch's rows."""

    dispatch: set[str]  # new jobs (and replays)
    repeats: set[str]  # the same job sent again with the same content: collapsed
    conflicts: set[str]  # the job_id is taken by other content: refuse the record
    redelivered: set[str] = field(default_factory=set)  # same record, job still queued


def queue_jobs(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> Queued:
    """Insert ``queued`` rows for a batch and classify the job_ids that were already there.

    A row that already exists is dispatched again only when it is still queued and came from the
    very same Kafka record (the bridge died between its ledger write and its offset commit); a
    job_id sent again by another record with the same content is an idempotent retry (it
    collapses into the first); with other content (input, tenant, meta, priority, deadline) it is
    a conflict the caller refuses, and the first job's row is left as it is. A row marked
    ``replay`` (a record re-submitted from the DLQ) brings back its job if it ended failed,
    rejected or expired; a replay of a job that is live or succeeded collapses, so replaying
    twice never runs a job twice.
    """
    queued = [{**r, "status": JobStatus.QUEUED} for r in rows]
    new = insert_jobs(conn, queued)
    new |= _replay(conn, [r for r in queued if r["job_id"] not in new and r.get("replay")])
    again = [r for r in queued if r["job_id"] not in new]
    if not again:
        return Queued(new, set(), set())
    dispatch, repeats, conflicts, redelivered = set(new), set[str](), set[str](), set[str]()
    params = {name: _column(again, name) for name in ("job_id", "source_topic",
                                                      "source_partition", "source_offset",
                                                      "model", "tenant", "input", "meta",
                                                      "priority", "deadline_at")}
    found = conn.execute(EXISTING, {
        "ids": params["job_id"], "topics": params["source_topic"],
        "parts": params["source_partition"], "offs": params["source_offset"],
        "models": params["model"], "tenants": params["tenant"], "inputs": params["input"],
        "metas": params["meta"], "prios": params["priority"],
        "deadlines": params["deadline_at"], "queued": JobStatus.QUEUED.value})
    for job_id, same_record, still_queued, same_content in found:
        if same_record:
            (redelivered if still_queued else repeats).add(job_id)
        elif same_content:
            repeats.add(job_id)
        else:
            conflicts.add(job_id)
    return Queued(dispatch, repeats, conflicts, redelivered)


# Fenced: the status moves only for jobs still held by the attempt — under its batch's claim
# (``hold``: still queued in that batch) or, for a job run alone, its own lease — and results are
# written only for those (results exist only for succeeded jobs, from the attempt holding them).
# A held job's row gets its attempt, lease and start here, in the write that ends it.
_FENCE = (
    "(CASE WHEN CAST(:hold AS text) IS NULL "
    "  THEN j.status = CAST(:running AS job_status) AND j.lease = {lease} "
    "  ELSE j.status = CAST(:queued AS job_status) AND j.batch_id = CAST(:hold AS text) END)")
_HELD = "CASE WHEN CAST(:hold AS text) IS NULL THEN 0 ELSE 1 END"
_HELD_SET = (f"started_at = coalesce(CAST(:started AS timestamptz), j.started_at), "
             f"attempts = j.attempts + {_HELD}, lease = j.lease + {_HELD}")

FINISH = text(
    "WITH done AS (UPDATE jobs AS j SET status = CAST(:succeeded AS job_status), "
    f"  finished_at = :t, updated_at = now(), reason = NULL, error = NULL, {_HELD_SET} "
    "  FROM unnest(CAST(:ids AS uuid[]), CAST(:leases AS int[])) AS f(job_id, lease) "
    f"  WHERE j.job_id = f.job_id AND {_FENCE.format(lease='f.lease')} RETURNING j.job_id), "
    "ins AS (INSERT INTO results (job_id, model, label, probs, embedding, extra) "
    "  SELECT r.j, r.m, r.l, CAST(r.p AS real[]), CAST(r.e AS real[]), CAST(r.x AS jsonb) "
    "  FROM unnest(CAST(:ids AS uuid[]), CAST(:models AS text[]), CAST(:labels AS smallint[]), "
    "  CAST(:probs AS text[]), CAST(:embs AS text[]), CAST(:extras AS text[])) "
    "  AS r(j, m, l, p, e, x) JOIN done ON done.job_id = r.j "
    "  ON CONFLICT (job_id) DO NOTHING) "
    "SELECT count(*) FROM done"
)


def _hold(hold: Hold | None) -> dict[str, Any]:
    return {"hold": None if hold is None else hold.batch_id,
            "started": None if hold is None else hold.started_at,
            "running": JobStatus.RUNNING.value, "queued": JobStatus.QUEUED.value}


def finish_jobs(conn: Connection, result_rows: Sequence[Mapping[str, Any]],
                finished_at: datetime, hold: Hold | None = None) -> int:
    """queued (held by ``hold``) or running under the row's ``lease`` → succeeded with the
    results (a fenced-out attempt writes nothing). Returns the jobs that succeeded."""
    if not result_rows:
        return 0
    res = conn.execute(FINISH, {
        "t": finished_at, **_hold(hold), "succeeded": JobStatus.SUCCEEDED.value,
        "ids": pgarray.uuids([r["job_id"] for r in result_rows]),
        "leases": pgarray.ints([r["lease"] for r in result_rows]),
        "models": pgarray.texts([r["model"] for r in result_rows]),
        "labels": pgarray.ints([r.get("label") for r in result_rows]),
        "probs": pgarray.texts([pgarray.floats(r.get("probs")) for r in result_rows]),
        "embs": pgarray.texts([pgarray.floats(r.get("embedding")) for r in result_rows]),
        "extras": pgarray.jsons([r.get("extra") for r in result_rows]),
    })
    return int(res.scalar_one())


END = text(
    "UPDATE jobs AS j SET status = CAST(:status AS job_status), reason = o.reason, "
    f"error = o.error, finished_at = :t, updated_at = now(), {_HELD_SET} "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:rs AS text[]), CAST(:er AS text[]), "
    "CAST(:leases AS int[])) AS o(job_id, reason, error, lease) "
    "WHERE j.job_id = o.job_id AND j.status = ANY(CAST(:live AS job_status[])) "
    f"AND (o.lease IS NULL OR {_FENCE.format(lease='o.lease')}) "
    "RETURNING j.job_id::text, j.model, j.input, j.tenant, j.priority, j.meta, j.deadline_at, "
    "j.source_topic, j.source_partition, j.source_offset, j.attempts, j.reason, j.error, "
    "j.reply_to"
)

Outcome = tuple[str, str, str]  # (job_id, reason, error)
Leases = Mapping[str, int]  # job_id -> the lease of the attempt that decides


def _fenced(leases: Leases | None, hold: Hold | None) -> dict[str, Any]:
    if hold is not None and leases is None:
        raise ValueError("a held job's outcome is fenced: pass the attempt's leases")
    return _hold(hold)


def _end(conn: Connection, status: JobStatus, outcomes: Sequence[Outcome],
         finished_at: datetime, leases: Leases | None, hold: Hold | None = None
         ) -> list[dict[str, Any]]:
    if not outcomes:
        return []
    res = conn.execute(END, {
        "t": finished_at, "status": status.value, "live": list(LIVE), **_fenced(leases, hold),
        "ids": [o[0] for o in outcomes], "rs": [o[1] for o in outcomes],
        "er": [o[2][:ERROR_CHARS] for o in outcomes],
        "leases": [None if leases is None else leases[o[0]] for o in outcomes]})
    return [dict(r._mapping) for r in res]


def fail_jobs(conn: Connection, outcomes: Sequence[Outcome], finished_at: datetime,
              leases: Leases | None = None, hold: Hold | None = None) -> list[dict[str, Any]]:
    """queued|running → failed with (job_id, reason, error); with ``leases`` only jobs still
    held by the attempt (an attempt's own verdict: running under those leases, or, with
    ``hold``, queued under that batch claim). Returns, for the jobs that changed, what their DLQ
    copy needs (the v1 fields, source coordinates, attempts, reason, error)."""
    return _end(conn, JobStatus.FAILED, outcomes, finished_at, leases, hold)


def expire_jobs(conn: Connection, outcomes: Sequence[Outcome], finished_at: datetime) -> int:
    """queued|running → expired with (job_id, reason, error): past their deadline."""
    return len(_end(conn, JobStatus.EXPIRED, outcomes, finished_at, None))


REQUEUE = text(
    "UPDATE jobs AS j SET status = CAST(:queued AS job_status), reason = o.reason, "
    f"error = o.error, queued_at = now(), updated_at = now(), batch_id = NULL, {_HELD_SET} "
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:rs AS text[]), CAST(:er AS text[]), "
    "CAST(:leases AS int[])) AS o(job_id, reason, error, lease) "
    "WHERE j.job_id = o.job_id AND j.status = ANY(CAST(:live AS job_status[])) "
    f"AND (o.lease IS NULL OR {_FENCE.format(lease='o.lease')}) "
    "RETURNING j.job_id::text"
)


def requeue_jobs(conn: Connection, outcomes: Iterable[Outcome],
                 leases: Leases | None = None, hold: Hold | None = None) -> list[str]:
    """Live → queued under no batch with (job_id, reason, error), keeping their attempts (a held
    job's is counted here): a retry (with ``leases`` and ``hold``, only jobs still held by the
    attempt, as in ``fail_jobs``). The caller re-enqueues the returned jobs (after a backoff);
    the reaper does if that publish is lost."""
    items = list(outcomes)
    if not items:
        return []
    res = conn.execute(REQUEUE, {
        "live": list(LIVE), **_fenced(leases, hold),
        "ids": [o[0] for o in items], "rs": [o[1] for o in items],
        "er": [o[2][:ERROR_CHARS] for o in items],
        "leases": [None if leases is None else leases[o[0]] for o in items]})
    return [r[0] for r in res]
