"""The reply outbox (``replies``, filled by the trigger of migration 0005): take due rows with
their job and result, mark them sent or delayed. Each function takes the caller's connection;
the relay (``ops.relay``) holds one transaction around take → publish → mark, so the row locks
(``FOR UPDATE SKIP LOCKED``) keep two relays from sending one row at the same time, and a relay
that dies before its commit leaves its rows for the next pass (a duplicate, never a loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text


def job_columns(status: str = "j.status::text", attempts: str = "j.attempts",
                started_at: str = "j.started_at") -> str:
    """A job as its reply event shows it (``producers.replies.reply_event``); ``j`` is jobs and
    ``x`` is results, left-joined. A reader of live jobs passes the expressions of
    ``storage.batches`` for the three columns a batch claim holds."""
    return (f"j.job_id::text AS job_id, {status} AS status, j.reason, j.error, j.model, "
            f"j.tenant, j.meta, {attempts} AS attempts, j.produced_at, j.received_at, "
            f"j.queued_at, {started_at} AS started_at, j.finished_at, x.label, x.probs, "
            "x.embedding, x.extra")


JOB_COLUMNS = job_columns()  # terminal jobs: their row holds everything

TAKE_DUE = text(
    "WITH due AS (SELECT id FROM replies WHERE sent_at IS NULL AND next_at <= now() "
    "  ORDER BY id LIMIT :lim FOR UPDATE SKIP LOCKED) "
    f"SELECT r.id AS reply_id, r.topic, r.attempts AS tries, {JOB_COLUMNS} "
    "FROM due JOIN replies r ON r.id = due.id JOIN jobs j ON j.job_id = r.job_id "
    "LEFT JOIN results x ON x.job_id = r.job_id ORDER BY r.id"
)

# clock_timestamp(), not now() (the start of the relay's transaction, before its publish).
MARK_SENT = text("UPDATE replies SET sent_at = clock_timestamp() "
                 "WHERE id = ANY(CAST(:ids AS bigint[]))")

# Exponential backoff per row, so a topic that cannot be written (deleted, not allowed) is
# retried now and then without holding up the replies behind it.
DELAY = text(
    "UPDATE replies SET attempts = LEAST(attempts + 1, 32000), error = :err, "
    "next_at = now() + make_interval(secs => LEAST(CAST(:cap AS float8), power(2, attempts))) "
    "WHERE id = ANY(CAST(:ids AS bigint[]))"
)

UNSENT = text("SELECT count(*) FROM replies WHERE sent_at IS NULL")


def take_replies(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` unsent, due outbox rows, oldest first, locked (rows another relay holds
    are skipped), each with its job and result columns."""
    return [dict(r._mapping) for r in conn.execute(TAKE_DUE, {"lim": limit})]


def mark_sent(conn: Connection, reply_ids: Sequence[int]) -> None:
    """The rows' events were acknowledged by Kafka (acks=all)."""
    if reply_ids:
        conn.execute(MARK_SENT, {"ids": list(reply_ids)})


def delay_replies(conn: Connection, reply_ids: Sequence[int], error: str, cap_s: float) -> None:
    """The rows could not be published: retry after 2^attempts seconds (at most ``cap_s``)."""
    if reply_ids:
        conn.execute(DELAY, {"ids": list(reply_ids), "err": error[:500], "cap": float(cap_s)})


def unsent_count(conn: Connection) -> int:
    """Outbox rows not yet published (due or delayed)."""
    return int(conn.execute(UNSENT).scalar_one())
