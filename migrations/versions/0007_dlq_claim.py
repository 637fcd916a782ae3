"""DLQ copies owed are claimed before they are sent: ``jobs.dlq_claimed_at``.

Revision ID: 0007_dlq_claim
Revises: 0006_least_privilege

A failed job's DLQ copy is sent by the process that failed it, right after the commit; a copy
that is never acknowledged (``dlq_at`` stays empty) is sent again by the reaper. Before this
column the reaper took every unacknowledged copy older than a few seconds, so a worker whose send
was merely slow (its producer still connecting) and the reaper both sent one: two copies of one
job on the DLQ. Now the reaper claims a copy (``dlq_claimed_at``) in the statement that reads it,
only once the previous sender's send window has passed (``finished_at`` for the failing process,
``dlq_claimed_at`` for a reaper), and skips rows another reaper holds locked.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_dlq_claim"
down_revision = "0006_least_privilege"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("dlq_claimed_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("jobs", "dlq_claimed_at")
