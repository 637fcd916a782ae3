"""uv.lock and pyproject.toml read for tests: what each install (runtime, extras) brings, and
which third-party modules our sources import. Standard library only, no network."""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
ROOMS = ("agentq", "cli", "producers", "bridge", "workers", "engine", "ops", "storage", "models",
         "migrations", "bench", "tests")
# A module some distributions provide under another name (the gpu extra replaces onnxruntime).
ALTERNATIVES = {"onnxruntime": {"onnxruntime", "onnxruntime-gpu"}}


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def req_name(req: str) -> str:
    for sep in ("[", ">", "<", "=", "~", "!", ";", " "):
        req = req.split(sep)[0]
    return norm(req)


def locked() -> dict[str, dict]:
    return {p["name"]: p for p in LOCK["package"]}


def closure(roots: Iterable[str | tuple[str, tuple[str, ...]]]) -> set[str]:
    """Every locked distribution reachable from ``roots`` (dependencies and chosen extras)."""
    pkgs = locked()
    visited: set[tuple[str, tuple[str, ...]]] = set()
    names: set[str] = set()
    todo = [r if isinstance(r, tuple) else (r, ()) for r in roots]
    while todo:
        item = todo.pop()
        if item in visited:
            continue
        visited.add(item)
        name, extras = item
        names.add(name)
        pkg = pkgs.get(name, {})
        deps = list(pkg.get("dependencies", []))
        for extra in extras:
            deps += pkg.get("optional-dependencies", {}).get(extra, [])
        todo += [(d["name"], tuple(d.get("extra", []))) for d in deps]
    return names


def runtime_roots() -> list[str]:
    return [req_name(r) for r in PYPROJECT["project"]["dependencies"]]


def extra_roots(extra: str) -> list[str]:
    return [req_name(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]


def install(extras: Iterable[str] = ()) -> set[str]:
    """The distributions an install of the runtime plus ``extras`` brings (uv.lock's own entry
    for the project lists each extra flattened, self-references like agentq[build] resolved)."""
    return closure([("agentq", tuple(extras))]) - {"agentq"}


def third_party_imports(paths: Iterable[Path]) -> dict[str, set[str]]:
    """Top-level third-party module -> the files importing it (nested imports included)."""
    out: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in ROOMS and top not in sys.stdlib_module_names:
                    out.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return out


def missing_from(dists: set[str], modules: Iterable[str]) -> dict[str, list[str]]:
    """Modules no distribution in ``dists`` provides (as mapped in this venv)."""
    provided = packages_distributions()
    missing = {}
    for top in modules:
        found = {norm(d) for d in provided.get(top, [])} | ALTERNATIVES.get(top, set())
        if not found & dists:
            missing[top] = sorted(found)
    return missing
