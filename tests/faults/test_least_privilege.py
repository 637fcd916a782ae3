"""The worker role (used by the bridge and the workers) has no DDL and no DELETE."""

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
        assert conn.execute(text("SELECT current_user")).scalar_one() != "agentq_owner"
