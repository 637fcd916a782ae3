"""The database roles the migrations grant rights to, named by environment variables (the
provisioning creates them: ``scripts/services.sh``, compose's init script), and a guard that
runs a grant only where its role exists."""

from __future__ import annotations

import os


def worker_role() -> str:
    return os.environ.get("AGENTQ_WORKER_ROLE", "agentq_worker")


def analyst_role() -> str:
    return os.environ.get("AGENTQ_ANALYST_ROLE", "agentq_analyst")


def if_role(role: str, body: str) -> str:
    """A DO block that runs ``body`` only when ``role`` exists."""
    return f"""
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
            {body}
          END IF;
        END $$;
        """
