"""Reply outbox: ``jobs.reply_to``, the ``replies`` table, the trigger that fills it, the grants.

Revision ID: 0005_replies
Revises: 0004_replays

A job that reaches a terminal state (succeeded, failed, rejected, expired) with a reply topic
gets one ``replies`` row, written by a trigger on ``jobs`` inside the very transaction that made
it terminal: the outbox commits with the result or not at all, whichever path decided it (the
bridge's rejects and expiries, the workers' results and failures, the reaper), and the hot-path
SQL stays as it was. The trigger also NOTIFYs ``agentq_replies``, delivered only on commit, so
relays wake at once instead of polling. The relay (``ops.relay``) publishes each row and sets
``sent_at``; rows are kept, like jobs, so SQL can tell when each reply left.

The trigger function is SECURITY DEFINER (owned by the migrating role): the worker role cannot
write the outbox itself, it may only read it and mark rows sent or delayed.
"""

import os

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0005_replies"
down_revision = "0004_replays"
branch_labels = None
depends_on = None

TERMINAL = "('succeeded', 'failed', 'rejected', 'expired')"
CHANNEL = "agentq_replies"


def worker_role() -> str:
    return os.environ.get("AGENTQ_WORKER_ROLE", "agentq_worker")


FUNCTION = f"""
CREATE FUNCTION agentq_queue_reply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  INSERT INTO replies (job_id, topic) VALUES (NEW.job_id, NEW.reply_to);
  PERFORM pg_notify('{CHANNEL}', '');
  RETURN NULL;
END $$
"""

# Row triggers whose WHEN clause is evaluated without calling the function, so jobs without a
# reply topic and non-terminal transitions (claims, retries, lease renewals) cost nothing.
ON_INSERT = f"""
CREATE TRIGGER jobs_reply_on_insert AFTER INSERT ON jobs FOR EACH ROW
WHEN (NEW.reply_to IS NOT NULL AND NEW.status IN {TERMINAL})
EXECUTE FUNCTION agentq_queue_reply()
"""

ON_FINISH = f"""
CREATE TRIGGER jobs_reply_on_finish AFTER UPDATE OF status ON jobs FOR EACH ROW
WHEN (NEW.reply_to IS NOT NULL AND NEW.status IN {TERMINAL} AND OLD.status NOT IN {TERMINAL})
EXECUTE FUNCTION agentq_queue_reply()
"""


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.add_column("jobs", sa.Column("reply_to", sa.Text))
    op.create_table(
        "replies",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("job_id", UUID(as_uuid=False), sa.ForeignKey("jobs.job_id"), nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False, server_default=sa.func.now()),
        sa.Column("next_at", ts, nullable=False, server_default=sa.func.now()),
        sa.Column("attempts", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("sent_at", ts),
    )
    op.create_index("replies_unsent_idx", "replies", ["id"],
                    postgresql_where=sa.text("sent_at IS NULL"))
    op.create_index("replies_job_idx", "replies", ["job_id"])
    op.execute(FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION agentq_queue_reply() FROM PUBLIC")
    op.execute(ON_INSERT)
    op.execute(ON_FINISH)
    role = worker_role()
    # The relay reads the outbox and marks rows sent or delayed: no INSERT, no DELETE.
    op.execute(
        f"""
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
            GRANT SELECT, UPDATE (sent_at, next_at, attempts, error) ON replies TO {role};
          END IF;
        END $$;
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_reply_on_finish ON jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_reply_on_insert ON jobs")
    op.execute("DROP FUNCTION IF EXISTS agentq_queue_reply()")
    op.drop_table("replies")
    op.drop_column("jobs", "reply_to")
