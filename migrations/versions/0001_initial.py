"""Job ledger, results, model registry; least-privilege grants for the worker role.

Revision ID: 0001
Revises:
"""

import os

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("queued", "running", "succeeded", "failed", "rejected", "expired")


def worker_role() -> str:
    return os.environ.get("AGENTQ_WORKER_ROLE", "agentq_worker")


def upgrade() -> None:
    status = sa.Enum(*STATUSES, name="job_status")
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("job_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("status", status, nullable=False),
        sa.Column("tenant", sa.Text),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("input", JSONB),
        sa.Column("meta", JSONB),
        sa.Column("reason", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("queue", sa.Text),
        sa.Column("batch_id", sa.Text),
        sa.Column("source_topic", sa.Text),
        sa.Column("source_partition", sa.Integer),
        sa.Column("source_offset", sa.BigInteger),
        sa.Column("deadline_at", ts),
        sa.Column("produced_at", ts),
        sa.Column("received_at", ts),
        sa.Column("queued_at", ts),
        sa.Column("started_at", ts),
        sa.Column("finished_at", ts),
        sa.Column("updated_at", ts, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("jobs_status_updated_idx", "jobs", ["status", "updated_at"])
    op.create_index("jobs_model_finished_idx", "jobs", ["model", "finished_at"])
    op.create_index("jobs_tenant_idx", "jobs", ["tenant"])
    op.create_table(
        "results",
        sa.Column("job_id", UUID(as_uuid=False), sa.ForeignKey("jobs.job_id"), primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("embedding", ARRAY(REAL)),
        sa.Column("label", sa.SmallInteger),
        sa.Column("probs", ARRAY(REAL)),
        sa.Column("extra", JSONB),
        sa.Column("created_at", ts, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("variant", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("metrics", JSONB, nullable=False, server_default="{}"),
        sa.Column("created_at", ts, nullable=False, server_default=sa.func.now()),
        sa.Column("active", sa.Boolean, nullable=False, server_default="false"),
        sa.UniqueConstraint("name", "version", "variant", name="models_name_version_variant_key"),
    )
    role = worker_role()
    # The worker role reads and writes rows; it has no DELETE and no DDL (it owns nothing).
    op.execute(
        f"""
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
            GRANT SELECT, INSERT, UPDATE ON jobs, results TO {role};
            GRANT SELECT ON models TO {role};
            GRANT USAGE ON SCHEMA public TO {role};
          END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.drop_table("results")
    op.drop_table("jobs")
    op.drop_table("models")
    op.execute("DROP TYPE IF EXISTS job_status")
