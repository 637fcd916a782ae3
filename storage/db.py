"""Engine factory (one per process, built at start-up and passed down) and the transaction
helpers that turn database errors into the storage package's own (retryable or not)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from storage.errors import StorageError, StorageRefused, StorageUnavailable

# SQLSTATE classes that mean "try again": connection exceptions, insufficient resources,
# operator intervention (shutdown, restart), serialization failures and deadlocks.
_RETRYABLE_SQLSTATE = ("08", "53", "57", "40")


def make_engine(url: str, pool_size: int = 5, app_name: str = "agentq") -> Engine:
    """A pooled engine with pre-ping, so a restarted PostgreSQL is survived transparently."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "application_name": app_name,
            "connect_timeout": 5,
            # A peer that vanished without closing (network partition, killed host) must not
            # hang a pooled connection forever: TCP keepalives plus a user timeout bound it.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        },
    )


def classify(error: SQLAlchemyError) -> StorageError:
    """The storage error for a SQLAlchemy error: unavailable (retry) or refused (do not)."""
    if isinstance(error, DisconnectionError | PoolTimeout):
        return StorageUnavailable(str(error))
    if isinstance(error, DBAPIError):
        state = getattr(error.orig, "sqlstate", None) or ""
        if error.connection_invalidated or state.startswith(_RETRYABLE_SQLSTATE) or (
                not state and type(error).__name__ in ("OperationalError", "InterfaceError")):
            return StorageUnavailable(str(error))
        return StorageRefused(str(error))
    return StorageRefused(str(error))


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()`` whose errors, commit included, are storage errors."""
    try:
        with engine.begin() as conn:
            yield conn
    except SQLAlchemyError as e:
        raise classify(e) from e


@contextmanager
def connection(engine: Engine) -> Iterator[Connection]:
    """``engine.connect()`` for reads, with storage errors."""
    try:
        with engine.connect() as conn:
            yield conn
    except SQLAlchemyError as e:
        raise classify(e) from e
