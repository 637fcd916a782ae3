"""Fixtures for real services. A missing service skips locally and fails under CI=true."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentq.config import Settings
from tests.support import Stack, isolated_settings, port_open

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing_services(settings: Settings) -> list[str]:
    from urllib.parse import urlparse

    missing = []
    if not port_open(settings.kafka.bootstrap_servers.split(",")[0]):
        missing.append(f"kafka at {settings.kafka.bootstrap_servers}")
    r = urlparse(settings.redis_url)
    if not port_open(f"{r.hostname}:{r.port or 6379}"):
        missing.append(f"redis at {r.hostname}:{r.port}")
    p = urlparse(settings.database_url.replace("+psycopg", ""))
    if not port_open(f"{p.hostname}:{p.port or 5432}"):
        missing.append(f"postgres at {p.hostname}:{p.port}")
    return missing


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def services(settings: Settings) -> Settings:
    missing = _missing_services(settings)
    if missing:
        msg = "live services not reachable: " + ", ".join(missing) + \
              " (start them with `bash scripts/services.sh up`)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return settings


@pytest.fixture(scope="session")
def migrated(services: Settings) -> Settings:
    from alembic import command

    from cli.db import alembic_config

    command.upgrade(alembic_config(services.database_url), "head")
    return services


@pytest.fixture(scope="session")
def built_models(migrated: Settings) -> Settings:
    """digits-mlp built (cached by content hash) and registered."""
    from models.build import build_models

    build_models(["digits-mlp"], migrated.worker.models_dir, migrated.database_url)
    return migrated


@pytest.fixture(scope="session")
def owner_db(migrated: Settings):
    from storage.db import make_engine

    eng = make_engine(migrated.database_url, pool_size=2, app_name="agentq-tests")
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def worker_db(migrated: Settings):
    from storage.db import make_engine

    eng = make_engine(migrated.worker_database_url, pool_size=2, app_name="agentq-tests")
    yield eng
    eng.dispose()


@pytest.fixture
def stack(built_models: Settings, request: pytest.FixtureRequest, tmp_path: Path):
    """An isolated topic/group/queue set plus a process group torn down after the test."""
    from producers.topics import delete_topics, ensure_topics

    s, env = isolated_settings(built_models, request.node.name[:20].replace("_", "-"))
    ensure_topics(s.kafka)
    st = Stack(env=env, log_dir=tmp_path)
    st.settings = s  # type: ignore[attr-defined]
    yield st
    st.stop_all()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(st.logs())
    try:  # best effort: keep the broker from collecting one topic pair per test run
        delete_topics(s.kafka, [s.kafka.jobs_topic, s.kafka.dlq_topic])
    except Exception as e:  # a broker killed by a fault test may still be coming back
        print(f"topic clean-up skipped: {e}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
