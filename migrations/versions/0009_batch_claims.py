"""``running`` once per batch: the ``batches`` table, the ``job_state`` view, status counts from it.

Revision ID: 0009_batch_claims
Revises: 0008_partial_indexes

Until this revision a worker marked every job of a batch ``running`` with an UPDATE of its row
(status, started_at, attempts, lease): a second heap tuple and an entry in every index of
``jobs`` per job, none of it HOT. Now a worker claims a *batch*: one ``batches`` row (its id,
model, size, claim time and lease — the count of claims, which tells a redelivery from the first
delivery). A job whose row is ``queued`` and whose ``batch_id`` names a claimed batch is running
under that batch's claim; its row is next written when it ends, with ``started_at`` from the
batch and its attempt counted then (``storage.batches``). Only the recovery paths (a redelivered
batch's suspects, the reaper taking over) still move single jobs to ``running`` in ``jobs``.

SQL users read a job's status through ``job_state`` (the effective status, started_at and
attempts); ``job_status_counts`` now counts from it, so running jobs show as ``running``.
"""

import sqlalchemy as sa
from alembic import op

from migrations.roles import analyst_role, if_role, worker_role

revision = "0009_batch_claims"
down_revision = "0008_partial_indexes"
branch_labels = None
depends_on = None

# A job held by a claimed batch: queued in ``jobs``, running in fact.
JOB_STATE = """
CREATE VIEW job_state AS
SELECT j.job_id, j.model,
       CASE WHEN b.batch_id IS NOT NULL THEN 'running'::job_status ELSE j.status END AS status,
       coalesce(j.started_at, b.started_at) AS started_at,
       j.attempts + CASE WHEN b.batch_id IS NOT NULL THEN 1 ELSE 0 END AS attempts,
       j.batch_id, j.updated_at
FROM jobs j LEFT JOIN batches b ON b.batch_id = j.batch_id AND j.status = 'queued'
"""

STATUS_COUNTS = """
CREATE OR REPLACE VIEW job_status_counts AS
SELECT model, status, count(*) AS jobs, max(updated_at) AS last_update
FROM job_state
GROUP BY model, status
"""

STATUS_COUNTS_BEFORE = """
CREATE OR REPLACE VIEW job_status_counts AS
SELECT model, status, count(*) AS jobs, max(updated_at) AS last_update
FROM jobs
GROUP BY model, status
"""


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.Text(), primary_key=True),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("lease", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(JOB_STATE)
    op.execute(STATUS_COUNTS)
    # Workers claim batches (insert, or update the lease of a redelivered one); no DELETE.
    op.execute(if_role(worker_role(), f"""
            GRANT SELECT, INSERT, UPDATE ON batches TO {worker_role()};
            GRANT SELECT ON job_state TO {worker_role()};
    """))
    op.execute(if_role(analyst_role(), f"GRANT SELECT ON batches, job_state TO {analyst_role()};"))


def downgrade() -> None:
    op.execute(STATUS_COUNTS_BEFORE)
    op.execute("DROP VIEW IF EXISTS job_state")
    op.drop_table("batches")
