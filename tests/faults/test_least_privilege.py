"""The worker role (used by the bridge, the workers and the relay) has no DDL and no DELETE, and
may only mark reply outbox rows sent or delayed (the trigger writes them)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

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
        assert conn.execute(text("SELECT current_user")).scalar_one() != "agentq_owner"
