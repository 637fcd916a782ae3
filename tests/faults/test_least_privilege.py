"""The worker role (used by the bridge, the workers and the relay) has no DDL, no DELETE, no
UPDATE of results and no temporary tables, and may only mark reply outbox rows sent or delayed
(the trigger writes them); the analyst role reads and does nothing else."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from tests.conftest import IN_CI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.mark.parametrize("statement", [
    "CREATE TABLE agentq_intruder (x int)",
    "DELETE FROM jobs WHERE false",
    "DELETE FROM results WHERE false",
    "TRUNCATE jobs",
    "DROP TABLE results",
    "ALTER TABLE jobs ADD COLUMN intruder int",
    "UPDATE models SET active = active WHERE false",
    "INSERT INTO replies (job_id, topic) SELECT job_id, 'x' FROM jobs WHERE false",
    "UPDATE replies SET topic = topic WHERE false",
    "DELETE FROM replies WHERE false",
    # migration 0006: results are written once, and no code needs temporary tables
    "UPDATE results SET label = label WHERE false",
    "CREATE TEMP TABLE agentq_scratch (x int)",
    # migration 0009: batch claims are inserted and their lease updated, never deleted
    "DELETE FROM batches WHERE false",
    "TRUNCATE batches",
])
def test_worker_role_is_denied_ddl_and_deletes(worker_db, statement):
    with pytest.raises(ProgrammingError, match="(?i)permission denied|must be owner"):
        with worker_db.begin() as conn:
            conn.execute(text(statement))


def test_worker_role_can_do_its_job(worker_db):
    with worker_db.begin() as conn:
        conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        conn.execute(text("UPDATE jobs SET updated_at = updated_at WHERE false"))
        conn.execute(text("SELECT count(*) FROM models")).scalar_one()
        conn.execute(text("SELECT id FROM replies WHERE false FOR UPDATE SKIP LOCKED")).all()
        conn.execute(text("UPDATE replies SET sent_at = now(), attempts = attempts, "
                          "next_at = next_at, error = error WHERE false"))
        conn.execute(text("INSERT INTO batches AS b (batch_id, model, size, started_at) "
                          "SELECT 'x', 'x', 0, now() WHERE false ON CONFLICT (batch_id) "
                          "DO UPDATE SET lease = b.lease + 1"))
        conn.execute(text("SELECT count(*) FROM job_state")).scalar_one()
        assert conn.execute(text("SELECT current_user")).scalar_one() != "agentq_owner"


def test_worker_role_still_writes_results_once(worker_db):
    # INSERT … ON CONFLICT DO NOTHING (storage.ledger.finish_jobs) needs no UPDATE right.
    with worker_db.begin() as conn:
        conn.execute(text("INSERT INTO results (job_id, model) SELECT job_id, model FROM jobs "
                          "WHERE false ON CONFLICT (job_id) DO NOTHING"))


@pytest.fixture(scope="module")
def analyst_db(migrated):
    from storage.db import make_engine

    url = make_url(migrated.worker_database_url).set(
        username=os.environ.get("AGENTQ_ANALYST_ROLE", "agentq_analyst"),
        password=os.environ.get("AGENTQ_ANALYST_PASSWORD", "agentq_analyst"))
    eng = make_engine(url.render_as_string(hide_password=False), pool_size=1)
    try:
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as e:
        msg = f"analyst role not provisioned (bash scripts/services.sh up postgres): {e}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    yield eng
    eng.dispose()


def test_analyst_role_runs_the_cookbook_reads(analyst_db):
    with analyst_db.connect() as conn:
        for table in ("jobs", "results", "models", "job_latency_per_minute",
                      "model_throughput_per_minute", "job_status_counts", "failure_reasons",
                      "batches", "job_state"):
            conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
        assert conn.execute(text(
            "SELECT cosine_similarity(ARRAY[1,0]::real[], ARRAY[1,0]::real[])")).scalar_one() \
            == pytest.approx(1.0)


@pytest.mark.parametrize("statement", [
    "INSERT INTO models (name, version, variant, device, path, sha256) "
    "VALUES ('x', 'x', 'x', 'x', 'x', 'x')",
    "UPDATE jobs SET updated_at = updated_at WHERE false",
    "DELETE FROM results WHERE false",
    "CREATE TEMP TABLE agentq_scratch (x int)",
    "CREATE TABLE agentq_intruder (x int)",
])
def test_analyst_role_is_read_only(analyst_db, statement):
    # Read-only by default (default_transaction_read_only), and refused by its grants even in a
    # transaction the analyst switched to read-write.
    with pytest.raises(DBAPIError, match="(?i)read-only transaction"):
        with analyst_db.begin() as conn:
            conn.execute(text(statement))
    with pytest.raises(DBAPIError, match="(?i)permission denied"):
        with analyst_db.begin() as conn:
            conn.execute(text("SET TRANSACTION READ WRITE"))
            conn.execute(text(statement))

