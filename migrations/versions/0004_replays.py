"""DLQ replays: ``jobs.replays`` counts how often a failed, rejected or expired job was
re-submitted from the DLQ (``agentq dlq replay``) and ran again as a new attempt.

Revision ID: 0004_replays
Revises: 0003_fencing
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_replays"
down_revision = "0003_fencing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("replays", sa.SmallInteger(), nullable=False,
                                    server_default="0"))


def downgrade() -> None:
    op.drop_column("jobs", "replays")
