"""The `agentq` command: one CLI, one subcommand per room's entry point.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``run(args, settings) -> int``; this module only lists them. Settings are read from the
environment here, once, and passed down (a flag beats the variable, the variable the default).
"""

from __future__ import annotations

import argparse
import sys

from agentq.config import Settings
from agentq.log import configure_logging
from cli import bench, check, db, demo, serve, topics
from models import cli as models_cli
from ops import autoscale, dlq_replay, reaper, relay, status
from producers import cli as producers_cli
from producers import submit_cli

# The order is the order of `agentq --help`.
COMMANDS = (producers_cli, submit_cli, serve, topics, db, models_cli, check, status, autoscale,
            reaper, relay, dlq_replay, demo, bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentq", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_json)
    return int(args.run(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
