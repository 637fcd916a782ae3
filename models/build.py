"""`agentq models build [NAME]`: build, gate and register model variants.

Artifacts live under ``<models_dir>/<name>/<version>/`` where the version is a hash of the build
sources and parameters: a rebuild with unchanged inputs finds the manifest and does nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from agentq.log import get_logger
from models.artifacts import artifact_dir, read_manifest, sha256_file, write_manifest
from models.catalog import CATALOG
from models.errors import BuildStackMissing, UnknownModel

log = get_logger("agentq.models")

def build_models(names: list[str] | None, models_dir: Path, register_url: str | None,
                 force: bool = False) -> list[dict[str, Any]]:
    """Build (or find cached) each model, then register every variant in the database."""
    explicit = bool(names)
    asked = set(names or CATALOG)  # --force rebuilds these, not the builds they read
    names = with_requirements(names or list(CATALOG))
    manifests = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  transient=False) as progress:
        for name in names:
            if name not in CATALOG:
                raise UnknownModel(f"no model {name!r} in the catalogue; known: {sorted(CATALOG)}")
            entry = CATALOG[name]
            try:
                version = entry.version()
            except ImportError as e:  # its build dependencies are not installed
                if explicit:
                    raise UnknownModel(f"cannot build {name}: {e}") from e
                log.warning("model_build_skipped", model=name, error=str(e))
                continue
            out = artifact_dir(models_dir, name, version)
            task = progress.add_task(f"{name} {version}: checking cache", total=None)
            manifest = None if force and name in asked else read_manifest(out)
            if manifest is None:
                out.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()

                def step(msg: str, _task: Any = task, _label: str = f"{name} {version}") -> None:
                    progress.update(_task, description=f"{_label}: {msg}")

                try:
                    manifest = entry.build(out, step)
                except ModuleNotFoundError as e:  # a runtime-only install: no build extra
                    raise BuildStackMissing(
                        f"building {name} {version} needs {e.name}: install the build extra "
                        "(pip install 'agentq[build]', or scripts/bootstrap.sh)") from e
                manifest.update(name=name, version=version,
                                build_s=round(time.perf_counter() - t0, 2))
                for v in manifest["variants"]:
                    v["sha256"] = sha256_file(out / v["file"])
                write_manifest(out, manifest)
                progress.update(task, description=f"{name} {version}: built")
                log.info("model_built", model=name, version=version,
                         variants=[v["variant"] for v in manifest["variants"]])
            else:
                progress.update(task, description=f"{name} {version}: cached, nothing to do")
            manifests.append(manifest)
    if register_url:
        register_manifests(manifests, models_dir, register_url)
    return manifests


def with_requirements(names: list[str]) -> list[str]:
    """``names`` with the models their builds read placed before them (catalogue ``requires``)."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for dep in CATALOG[name].requires if name in CATALOG else ():
            visit(dep)
        ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def register_manifests(manifests: list[dict[str, Any]], models_dir: Path, url: str) -> None:
    from storage.db import make_engine
    from storage.registry import register

    engine = make_engine(url, pool_size=1, app_name="agentq-models")
    try:
        with engine.begin() as conn:
            for m in manifests:
                for v in m["variants"]:
                    register(conn, name=m["name"], version=m["version"], variant=v["variant"],
                             device=v["device"],
                             path=str(Path(m["name"]) / m["version"] / v["file"]),
                             sha256=v["sha256"], metrics=v.get("metrics", {}),
                             active=bool(v.get("active")))
        log.info("models_registered", models=[m["name"] for m in manifests])
    finally:
        engine.dispose()
