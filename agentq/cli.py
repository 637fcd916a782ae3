"""The `agentq` command: one CLI, many subcommands (produce, bridge, db, models, check, …)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from agentq.config import Settings
from agentq.log import configure_logging, get_logger

log = get_logger("agentq.cli")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_bridge(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from producers.topics import ensure_topics
    from storage.db import make_engine
    from workers.app import app
    from workers.bridge import Bridge
    from workers.metrics import start_server as start_metrics_server

    if args.max_batch or args.max_wait_ms is not None:
        settings = replace(settings, bridge=replace(
            settings.bridge, max_batch=args.max_batch or settings.bridge.max_batch,
            max_wait_ms=(settings.bridge.max_wait_ms if args.max_wait_ms is None
                         else args.max_wait_ms)))
    ensure_topics(settings.kafka)
    db = make_engine(settings.worker_database_url, pool_size=2, app_name="agentq-bridge")
    stop = _stop_on_signals()
    start_metrics_server(role="bridge")  # AGENTQ_METRICS_PORT; off by default
    from workers.reaper import start_reaper

    start_reaper(settings, db, app, stop)  # re-enqueues jobs stuck past their lease
    Bridge(settings, db, app).run(stop)
    db.dispose()
    return 0


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from alembic import command

    cfg = alembic_config(settings.database_url)
    if args.action == "upgrade":
        command.upgrade(cfg, args.revision)
    elif args.action == "downgrade":
        command.downgrade(cfg, args.revision)
    else:
        command.current(cfg)
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from models.cli import main as models_main

    return models_main(args.rest, settings)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from agentq.health import check_all

    results = check_all(settings)
    for name, (ok, detail) in results.items():
        print(f"{name:10s} {'ok' if ok else 'FAIL'}  {detail}")
    return 0 if all(ok for ok, _ in results.values()) else 1


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from producers.cli import main as produce_main

    return produce_main(args, settings)


BENCHMARKS = {"models": "bench.models_bench", "e2e": "bench.e2e", "shm": "bench.shm_bench",
              "burst": "bench.burst"}
GENERIC = {"status": "workers.status", "autoscale": "workers.autoscale_cli",
           "reaper": "workers.reaper", "demo": "agentq.demo"}


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    import importlib

    module = BENCHMARKS.get(args.which)
    if module is None:
        print(f"unknown benchmark {args.which!r}", file=sys.stderr)
        return 2
    return int(importlib.import_module(module).main(args.rest) or 0)


def cmd_generic(module: str) -> Any:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        import importlib

        return int(importlib.import_module(module).main(args.rest, settings) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    from producers.cli import add_arguments as produce_args

    p = argparse.ArgumentParser(prog="agentq", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("produce", help="publish jobs to Kafka")
    produce_args(sp)
    sp.set_defaults(fn=cmd_produce)

    sp = sub.add_parser("bridge", help="run the Kafka → Celery bridge")
    sp.add_argument("--max-batch", type=int)
    sp.add_argument("--max-wait-ms", type=int)
    sp.set_defaults(fn=cmd_bridge)

    sp = sub.add_parser("db", help="database migrations")
    sp.add_argument("action", choices=["upgrade", "downgrade", "current"])
    sp.add_argument("revision", nargs="?", default="head")
    sp.set_defaults(fn=cmd_db)

    sp = sub.add_parser("models", help="build, gate and register models")
    sp.add_argument("rest", nargs=argparse.REMAINDER)
    sp.set_defaults(fn=cmd_models)

    sp = sub.add_parser("check", help="liveness: exit 0 when Kafka, Redis, Postgres answer")
    sp.set_defaults(fn=cmd_check)

    sp = sub.add_parser("bench", help="benchmarks: models | e2e | shm | burst")
    sp.add_argument("which")
    sp.add_argument("rest", nargs=argparse.REMAINDER)
    sp.set_defaults(fn=cmd_bench)

    helps = {"status": "live view of lag, queues, workers, latency",
             "autoscale": "lag-driven autoscaler",
             "reaper": "re-enqueue jobs stuck past their lease",
             "demo": "push a job stream through the whole system"}
    for name, module in GENERIC.items():
        sp = sub.add_parser(name, help=helps[name])
        sp.add_argument("rest", nargs=argparse.REMAINDER)
        sp.set_defaults(fn=cmd_generic(module))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Subcommands with their own parsers get their arguments untouched.
    passthrough = {"models": 1, "bench": 2, **{name: 1 for name in GENERIC}}
    n = passthrough.get(argv[0]) if argv else None
    if n is not None and not (len(argv) > 1 and argv[1] in ("-h", "--help") and n == 2):
        args = parser.parse_args(argv[:n])
        args.rest = argv[n:]
    else:
        args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_json)
    return int(args.fn(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
