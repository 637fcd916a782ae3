"""Tables of the job ledger, results and model registry (SQLAlchemy Core).

The Alembic revisions in ``migrations/`` create exactly these; the job status is a Postgres enum
mirrored by :class:`JobStatus`.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL, UUID


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.REJECTED,
                      JobStatus.EXPIRED})
LIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)  # dispatched, not yet terminal

metadata = MetaData()

job_status = Enum(
    JobStatus, name="job_status", values_callable=lambda e: [m.value for m in e],
    create_type=True,
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", UUID(as_uuid=False), primary_key=True),
    Column("model", Text, nullable=False),
    Column("status", job_status, nullable=False),
    Column("tenant", Text),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("input", JSONB),
    Column("meta", JSONB),
    Column("reason", Text),
    Column("error", Text),
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("queue", Text),
    Column("batch_id", Text),
    Column("source_topic", Text),
    Column("source_partition", Integer),
    Column("source_offset", BigInteger),
    Column("deadline_at", DateTime(timezone=True)),
    Column("produced_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True)),
    Column("queued_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("lease", Integer, nullable=False, server_default="0"),  # fencing token (0003)
    Column("dlq_at", DateTime(timezone=True)),  # DLQ copy acknowledged (failed jobs)
    Column("dlq_claimed_at", DateTime(timezone=True)),  # a reaper's resend of it began (0007)
    Column("replays", SmallInteger, nullable=False, server_default="0"),  # DLQ replays (0004)
    Column("reply_to", Text),  # topic of the job's result event (the bridge's default included)
)
Index("jobs_status_updated_idx", jobs.c.status, jobs.c.updated_at)
# Partial (0008): an unfinished row or one without a tenant is never looked up by these, and
# every write of a job would otherwise add an entry to each.
Index("jobs_model_finished_idx", jobs.c.model, jobs.c.finished_at,
      postgresql_where=jobs.c.finished_at.isnot(None))
Index("jobs_tenant_idx", jobs.c.tenant, postgresql_where=jobs.c.tenant.isnot(None))

results = Table(
    "results",
    metadata,
    Column("job_id", UUID(as_uuid=False), ForeignKey("jobs.job_id"), primary_key=True),
    Column("model", Text, nullable=False),
    Column("embedding", ARRAY(REAL)),
    Column("label", SmallInteger),
    Column("probs", ARRAY(REAL)),
    Column("extra", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Claimed batches (0009): a worker's claim marks a batch, not each of its jobs, ``running``; a job
# whose row is ``queued`` and whose ``batch_id`` names a claimed batch is running under it
# (``storage.batches``; the ``job_state`` view gives SQL users the effective status).
batches = Table(
    "batches",
    metadata,
    Column("batch_id", Text, primary_key=True),
    Column("model", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("lease", Integer, nullable=False, server_default="1"),  # claims so far
    Column("started_at", DateTime(timezone=True), nullable=False),
)

# The reply outbox: one row per terminal job with a reply topic, written by a trigger on ``jobs``
# in the transaction that made the job terminal (migration 0005), sent by ``ops.relay``.
replies = Table(
    "replies",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("job_id", UUID(as_uuid=False), ForeignKey("jobs.job_id"), nullable=False),
    Column("topic", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("next_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("error", Text),
    Column("sent_at", DateTime(timezone=True)),
)
Index("replies_unsent_idx", replies.c.id, postgresql_where=replies.c.sent_at.is_(None))
Index("replies_job_idx", replies.c.job_id)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("version", Text, nullable=False),
    Column("variant", Text, nullable=False),  # fp32 | fused | int8 | fp16
    Column("device", Text, nullable=False),  # cpu | cuda
    Column("path", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("metrics", JSONB, nullable=False, server_default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("active", Boolean, nullable=False, server_default="false"),
    UniqueConstraint("name", "version", "variant", name="models_name_version_variant_key"),
)
