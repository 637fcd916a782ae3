"""Engine factory: one SQLAlchemy engine per process, built at start-up and passed down."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine


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
