"""Partial indexes: rows without a tenant leave the tenant index, unfinished rows the
(model, finished_at) index.

Revision ID: 0008_partial_indexes
Revises: 0007_dlq_claim

Every job is written three times in ``jobs`` (the queued insert, the claim's ``running`` update,
the terminal update); none of the updates can be HOT (each changes ``status``, which
``jobs_status_updated_idx`` holds), so each writes an entry into every index of the table. A job
has no ``finished_at`` until its terminal update and often no tenant, and no query looks such a
row up by those columns (every reader of the (model, finished_at) index filters on a
``finished_at`` range, every reader of the tenant index on one tenant), so those entries were
pure cost. ``bench/results/ledger-cost.json`` measures the statements before and after.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_partial_indexes"
down_revision = "0007_dlq_claim"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("jobs_model_finished_idx", table_name="jobs")
    op.drop_index("jobs_tenant_idx", table_name="jobs")
    op.create_index("jobs_model_finished_idx", "jobs", ["model", "finished_at"],
                    postgresql_where=sa.text("finished_at IS NOT NULL"))
    op.create_index("jobs_tenant_idx", "jobs", ["tenant"],
                    postgresql_where=sa.text("tenant IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("jobs_model_finished_idx", table_name="jobs")
    op.drop_index("jobs_tenant_idx", table_name="jobs")
    op.create_index("jobs_model_finished_idx", "jobs", ["model", "finished_at"])
    op.create_index("jobs_tenant_idx", "jobs", ["tenant"])
