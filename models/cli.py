"""`agentq models build [NAME ...] [--force] [--no-register] [--models-dir DIR]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agentq.config import Settings
from models.catalog import names
from models.errors import ModelError


def register(sub: Any) -> None:
    p = sub.add_parser("models", help="build, gate and register models", description=__doc__)
    add_arguments(p)
    p.set_defaults(run=command)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentq models", description=__doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="build, gate and register models (cached by content hash)")
    b.add_argument("names", nargs="*", metavar="NAME",
                   help="models to build (default: all): " + ", ".join(names()))
    b.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    b.add_argument("--no-register", action="store_true",
                   help="build only; do not write the models table")
    b.add_argument("--models-dir", type=Path,
                   help="artifact root (default: AGENTQ_MODELS_DIR or artifacts/models)")


def main(argv: list[str] | None = None) -> int:
    return command(build_parser().parse_args(argv), Settings.from_env())


def command(args: argparse.Namespace, settings: Settings) -> int:
    from models.build import build_models

    models_dir = args.models_dir or settings.worker.models_dir
    url = None if args.no_register else settings.database_url
    try:
        manifests = build_models(args.names or None, models_dir, url, force=args.force)
    except ModelError as e:
        print(f"agentq models build: {e}", file=sys.stderr)
        return 1
    for man in manifests:
        for v in man["variants"]:
            flag = "active" if v.get("active") else "      "
            m = v.get("metrics", {})
            metrics = {k: m[k] for k in
                       ("accuracy", "mean_cosine", "min_cosine", "retrieval_top1",
                        "speedup_vs_fp32", "ms_per_batch", "us_per_batch") if k in m}
            if "hard" in m:
                metrics.update(hard_mean=m["hard"]["mean_cosine"], hard_min=m["hard"]["min_cosine"])
            print(f"{man['name']:16s} {man['version']}  {v['variant']:5s} {v['device']:4s} {flag} "
                  f"{json.dumps(metrics)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
