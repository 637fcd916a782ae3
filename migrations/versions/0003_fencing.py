"""Fenced attempts and durable DLQ copies.

* ``jobs.lease``: the fencing token of the attempt that holds a running job. Every claim and
  every takeover (a suspect run alone, the reaper re-publishing a lost job) takes a new lease; a
  worker's results and status land only while its lease is still the job's.
* ``jobs.dlq_at``: when the DLQ copy of a failed job was acknowledged; ``failed`` rows without
  it are sent again (by the reaper) until the DLQ takes them.

Revision ID: 0003_fencing
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_fencing"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lease", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("dlq_at", sa.DateTime(timezone=True)))
    # Jobs that failed before this revision had their copy sent (or logged as lost) then: the
    # sweep must not send every historical failure again.
    op.execute("UPDATE jobs SET dlq_at = coalesce(finished_at, now()) WHERE status = 'failed'")
    # The reaper's sweep for DLQ copies still owed reads failed rows without dlq_at.
    op.create_index("jobs_dlq_owed_idx", "jobs", ["finished_at"],
                    postgresql_where=sa.text("status = 'failed' AND dlq_at IS NULL"))


def downgrade() -> None:
    op.drop_index("jobs_dlq_owed_idx", table_name="jobs")
    op.drop_column("jobs", "dlq_at")
    op.drop_column("jobs", "lease")
