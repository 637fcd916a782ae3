"""The ``models`` table: written by the build (owner role), read by workers (worker role)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert

from storage.errors import ModelNotRegistered
from storage.schema import models


def register(conn: Connection, *, name: str, version: str, variant: str, device: str, path: str,
             sha256: str, metrics: dict[str, Any], active: bool) -> None:
    """Upsert one variant; when active, it becomes the only active variant for (name, device)."""
    if active:
        conn.execute(
            update(models).where(models.c.name == name, models.c.device == device)
            .values(active=False)
        )
    stmt = insert(models).values(name=name, version=version, variant=variant, device=device,
                                 path=path, sha256=sha256, metrics=metrics, active=active)
    conn.execute(stmt.on_conflict_do_update(
        constraint="models_name_version_variant_key",
        set_={"path": path, "sha256": sha256, "metrics": metrics, "active": active,
              "device": device},
    ))


def active_variant(conn: Connection, name: str, device: str) -> dict[str, Any]:
    """The active registry row for a model on a device; raises ModelNotRegistered."""
    row = conn.execute(
        select(models).where(models.c.name == name, models.c.device == device,
                             models.c.active.is_(True))
        .order_by(models.c.created_at.desc()).limit(1)
    ).mappings().first()
    if row is None:
        raise ModelNotRegistered(
            f"model {name!r} has no active variant for device {device!r}; "
            "run `agentq models build` first"
        )
    return dict(row)


def registered_names(conn: Connection) -> set[str]:
    return set(conn.execute(select(models.c.name).where(models.c.active.is_(True))).scalars())


def placements(conn: Connection) -> dict[str, frozenset[str]]:
    """Devices with an active variant, by model name."""
    out: dict[str, set[str]] = {}
    for name, device in conn.execute(select(models.c.name, models.c.device)
                                     .where(models.c.active.is_(True))):
        out.setdefault(name, set()).add(device)
    return {k: frozenset(v) for k, v in out.items()}
