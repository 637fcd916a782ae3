"""Reads of the ledger for the reaper, the bridge's in-flight cap, meters and `agentq status`.

Each takes a connection; statuses are bound ``JobStatus`` values.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from storage import batches
from storage.replies import job_columns
from storage.schema import LIVE, TERMINAL, JobStatus

_TERMINAL = sorted(s.value for s in TERMINAL)

STUCK_QUEUES = text(
    "SELECT DISTINCT coalesce(queue, '') FROM jobs WHERE status = ANY(CAST(:live AS job_status[])) "
    "AND updated_at < now() - make_interval(secs => :lease)")


def stuck_queues(conn: Connection, lease_s: float) -> list[str]:
    """Celery queues of the live jobs not touched for ``lease_s``."""
    rows = conn.execute(STUCK_QUEUES, {"lease": float(lease_s), "live": list(LIVE)})
    return [r[0] for r in rows]


def count_inflight(conn: Connection, topic: str, partitions: list[int] | None = None) -> int:
    """Jobs of ``topic`` dispatched to Celery and not yet terminal (queued or running)."""
    sql = ("SELECT count(*) FROM jobs WHERE status = ANY(CAST(:live AS job_status[])) "
           "AND source_topic = :t")
    params: dict[str, Any] = {"t": topic, "live": list(LIVE)}
    if partitions is not None:
        sql += " AND source_partition = ANY(:p)"
        params["p"] = list(partitions)
    return int(conn.execute(text(sql), params).scalar_one())


FINISHED_IN_WINDOW = text(
    "SELECT count(*), count(DISTINCT batch_id) FROM jobs "
    "WHERE status = ANY(CAST(:terminal AS job_status[])) "
    "AND updated_at >= now() - make_interval(secs => :w) AND source_topic = :t")


def finished_in_window(conn: Connection, topic: str, window_s: float) -> tuple[int, int]:
    """(jobs, batches) of ``topic`` that reached a terminal state in the last ``window_s``
    (served by the (status, updated_at) index)."""
    n, batches = conn.execute(FINISHED_IN_WINDOW,
                              {"w": window_s, "t": topic, "terminal": _TERMINAL}).one()
    return int(n), int(batches)


MODEL_REPORT = text("""
SELECT model,
       count(*) AS finished,
       count(*) FILTER (WHERE status = CAST(:succeeded AS job_status)) AS succeeded,
       count(*) FILTER (WHERE status <> CAST(:succeeded AS job_status)) AS not_ok,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY ms) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
FROM (SELECT model, status,
             1000 * extract(epoch FROM finished_at - coalesce(produced_at, received_at))::float8
               AS ms
      FROM jobs
      WHERE status = ANY(CAST(:terminal AS job_status[]))
        AND updated_at >= now() - make_interval(secs => :w)
        AND finished_at >= now() - make_interval(secs => :w)) t
GROUP BY model ORDER BY model
""")

OPEN_JOBS = text(f"SELECT {batches.STATUS} AS status, count(*) FROM jobs j {batches.HELD_JOIN} "
                 "WHERE j.status = ANY(CAST(:live AS job_status[])) AND j.source_topic = :t "
                 "GROUP BY 1")


def model_report(conn: Connection, window_s: float) -> list[dict[str, Any]]:
    """Per model over the window: finished, succeeded, not ok, latency p50/p95/p99 (ms)."""
    rows = conn.execute(MODEL_REPORT, {"w": window_s, "terminal": _TERMINAL,
                                       "succeeded": JobStatus.SUCCEEDED.value})
    return [dict(r._mapping) for r in rows]


def open_jobs(conn: Connection, topic: str) -> dict[str, int]:
    """Queued and running jobs of a source topic, by status (a job held by a batch claim is
    running)."""
    return {r[0]: int(r[1]) for r in conn.execute(OPEN_JOBS, {"live": list(LIVE), "t": topic})}


JOB_REPORT = text(
    f"SELECT {job_columns(batches.STATUS, batches.ATTEMPTS, batches.STARTED_AT)}, "
    "j.reply_to, r.sent_at AS reply_sent_at, r.error AS reply_error "
    f"FROM jobs j {batches.HELD_JOIN} "
    "LEFT JOIN results x ON x.job_id = j.job_id "
    "LEFT JOIN LATERAL (SELECT sent_at, error FROM replies WHERE job_id = j.job_id "
    "  ORDER BY id DESC LIMIT 1) r ON true "
    "WHERE j.job_id = CAST(:id AS uuid)"
)


def job_report(conn: Connection, job_id: str) -> dict[str, Any] | None:
    """What the ledger holds for one job: status, reason, result, timestamps, attempts, and its
    reply (topic, when it was sent); None when there is no row."""
    row = conn.execute(JOB_REPORT, {"id": job_id}).first()
    return None if row is None else dict(row._mapping)
