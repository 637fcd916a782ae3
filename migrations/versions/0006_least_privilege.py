"""Least privilege: the worker role loses what no code needs; a read-only analyst role.

Revision ID: 0006_least_privilege
Revises: 0005_replies

* ``agentq_worker`` (bridges, workers, reaper) keeps SELECT/INSERT/UPDATE on ``jobs`` and
  SELECT/INSERT on ``results``: results are written once (``INSERT … ON CONFLICT DO NOTHING``)
  and never updated, so UPDATE on ``results`` goes; no code creates temporary tables, so
  TEMPORARY on the database goes (from PUBLIC too, which has it by default).
* ``agentq_analyst`` (the SQL cookbook, dashboards): CONNECT, and SELECT on the tables and views
  and EXECUTE on ``cosine_similarity``; nothing else. Tables and views added later by the owner
  are readable by it too (default privileges). The role itself is created by whoever provisions
  the server (``scripts/services.sh``, compose's init script), like the worker role: the owner
  that runs migrations may not create roles. Grants are skipped when a role does not exist.
"""

from alembic import op

from migrations.roles import analyst_role, if_role, worker_role

revision = "0006_least_privilege"
down_revision = "0005_replies"
branch_labels = None
depends_on = None

TABLES = ("jobs", "results", "models")
VIEWS = ("job_latency_per_minute", "model_throughput_per_minute", "job_status_counts",
         "failure_reasons")


def upgrade() -> None:
    worker, analyst = worker_role(), analyst_role()
    op.execute(if_role(worker, f"""
            REVOKE UPDATE, TRUNCATE, DELETE, REFERENCES, TRIGGER ON results FROM {worker};
            EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM {worker}', current_database());
    """))
    op.execute("DO $$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', "
               "current_database()); END $$;")
    op.execute(if_role(analyst, f"""
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO {analyst}', current_database());
            GRANT USAGE ON SCHEMA public TO {analyst};
            GRANT SELECT ON {", ".join(TABLES + VIEWS)} TO {analyst};
            GRANT EXECUTE ON FUNCTION cosine_similarity(real[], real[]) TO {analyst};
            ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {analyst};
    """))


def downgrade() -> None:
    worker, analyst = worker_role(), analyst_role()
    op.execute(if_role(analyst, f"""
            ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM {analyst};
            REVOKE ALL ON {", ".join(TABLES + VIEWS)} FROM {analyst};
            REVOKE EXECUTE ON FUNCTION cosine_similarity(real[], real[]) FROM {analyst};
            REVOKE USAGE ON SCHEMA public FROM {analyst};
            EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {analyst}', current_database());
    """))
    op.execute(if_role(worker, f"""
            GRANT UPDATE ON results TO {worker};
            EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO {worker}', current_database());
    """))
