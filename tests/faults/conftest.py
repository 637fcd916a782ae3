"""Fixtures of the fault-injection suite. Every fixture that breaks a service restores it in a
``finally``: in CI the rows run one after another against one set of services."""

from __future__ import annotations

import pytest

from tests.faults.harness import FAULT_ENV, restore_services


@pytest.fixture
def faulty(stack, tmp_path):
    """The ``stack`` fixture with fault-friendly timings and a failpoint once-dir."""
    once = tmp_path / "failpoints"
    once.mkdir()
    stack.env.update(FAULT_ENV)
    stack.env["AGENTQ_FAILPOINT_ONCE_DIR"] = str(once)
    return stack


@pytest.fixture
def restore():
    """Yields; afterwards every service is up again, whatever the test did to it."""
    try:
        yield restore_services
    finally:
        restore_services()
