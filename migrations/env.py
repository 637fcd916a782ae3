"""Alembic environment: runs as the owner role from AGENTQ_DATABASE_URL."""

from __future__ import annotations

import logging

from alembic import context
from sqlalchemy import create_engine, pool

from agentq.config import Settings
from agentq.log import configure_logging
from storage.schema import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
if not logging.getLogger().handlers:  # run by the `alembic` command, not `agentq db`
    _s = Settings.from_env()
    configure_logging(_s.log_level, _s.log_json)


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
