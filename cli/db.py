"""`agentq db upgrade|downgrade|current [REVISION]`: Alembic migrations, as the owner role."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agentq.config import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("db", help="database migrations", description=__doc__)
    p.add_argument("action", choices=["upgrade", "downgrade", "current"])
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(run=run)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def run(args: argparse.Namespace, settings: Settings) -> int:
    from alembic import command

    cfg = alembic_config(settings.database_url)
    if args.action == "upgrade":
        command.upgrade(cfg, args.revision)
    elif args.action == "downgrade":
        command.downgrade(cfg, args.revision)
    else:
        command.current(cfg)
    return 0
