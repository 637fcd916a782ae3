"""Views for SQL users (latency, throughput, status counts, failure reasons) and a cosine function.

Revision ID: 0002
Revises: 0001

Latency is end to end: ``finished_at - coalesce(produced_at, received_at)``, in milliseconds.
The views are read-only conveniences over ``jobs``; the worker role may SELECT them.
The recipes that use them are in ``docs/sql-cookbook.md``.
"""

import os

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEWS = ("job_latency_per_minute", "model_throughput_per_minute", "job_status_counts",
         "failure_reasons")


def worker_role() -> str:
    return os.environ.get("AGENTQ_WORKER_ROLE", "agentq_worker")


LATENCY = """
CREATE VIEW job_latency_per_minute AS
SELECT model,
       date_trunc('minute', finished_at) AS minute,
       count(*) AS jobs,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99_ms,
       max(ms)::float8 AS max_ms,
       avg(queue_ms)::float8 AS avg_queue_ms,
       avg(infer_ms)::float8 AS avg_run_ms
FROM (
  SELECT model, finished_at,
         1000 * extract(epoch FROM finished_at - coalesce(produced_at, received_at))::float8 AS ms,
         1000 * extract(epoch FROM started_at - queued_at)::float8 AS queue_ms,
         1000 * extract(epoch FROM finished_at - started_at)::float8 AS infer_ms
  FROM jobs
  WHERE status = 'succeeded' AND finished_at IS NOT NULL
) AS t
GROUP BY model, date_trunc('minute', finished_at)
"""

THROUGHPUT = """
CREATE VIEW model_throughput_per_minute AS
SELECT model,
       date_trunc('minute', finished_at) AS minute,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'expired') AS expired,
       count(*) AS finished,
       count(*) FILTER (WHERE status = 'succeeded') / 60.0::float8 AS succeeded_per_s
FROM jobs
WHERE finished_at IS NOT NULL
GROUP BY model, date_trunc('minute', finished_at)
"""

STATUS_COUNTS = """
CREATE VIEW job_status_counts AS
SELECT model, status, count(*) AS jobs, max(updated_at) AS last_update
FROM jobs
GROUP BY model, status
"""

FAILURES = """
CREATE VIEW failure_reasons AS
SELECT model, status, coalesce(reason, 'UNKNOWN') AS reason, count(*) AS jobs,
       min(updated_at) AS first_seen, max(updated_at) AS last_seen
FROM jobs
WHERE status IN ('failed', 'rejected', 'expired')
GROUP BY model, status, coalesce(reason, 'UNKNOWN')
"""

# Cosine similarity of two real[] vectors of the same length; NULL when either has zero norm.
COSINE = """
CREATE FUNCTION cosine_similarity(a real[], b real[]) RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT sum(x::float8 * y) / nullif(sqrt(sum(x::float8 * x)) * sqrt(sum(y::float8 * y)), 0)
  FROM unnest(a, b) AS t(x, y)
$$
"""


def upgrade() -> None:
    for ddl in (LATENCY, THROUGHPUT, STATUS_COUNTS, FAILURES, COSINE):
        op.execute(ddl)
    role = worker_role()
    views = ", ".join(VIEWS)
    op.execute(
        f"""
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
            GRANT SELECT ON {views} TO {role};
            GRANT EXECUTE ON FUNCTION cosine_similarity(real[], real[]) TO {role};
          END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS cosine_similarity(real[], real[])")
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
