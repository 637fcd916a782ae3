"""Content-addressed artifact directories and file hashing (no torch here)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any


def artifact_dir(models_dir: Path, name: str, version: str) -> Path:
    """Where one build of a model lives: ``<models_dir>/<name>/<version>/``."""
    return Path(models_dir) / name / version


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_version(*sources: Path, params: dict[str, Any] | None = None) -> str:
    """A short version id from the bytes of the build sources and the build parameters."""
    h = hashlib.sha256()
    for src in sorted(sources):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    h.update(json.dumps(params or {}, sort_keys=True).encode())
    return h.hexdigest()[:12]


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a complete build, or None when the build is missing or unfinished."""
    path = directory / "manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    for variant in manifest.get("variants", []):
        if not (directory / variant["file"]).exists():
            return None
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    tmp = directory / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp.replace(directory / "manifest.json")


def dist_version(name: str) -> str:
    """The installed version of a distribution (a build input), or ``absent``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def required_build(out: Path, name: str, version: str, needed_by: str, why: str
                   ) -> tuple[Path, dict[str, Any]]:
    """The directory and manifest of the build of ``name`` that a build writing into ``out``
    reads (catalogue ``requires``: it lies beside ``out`` under the same models directory);
    ``ModelError`` when that build is missing."""
    from models.errors import ModelError

    directory = artifact_dir(out.parent.parent, name, version)
    manifest = read_manifest(directory)
    if manifest is None:
        raise ModelError(f"{needed_by} {why} the {name} build at {directory}: "
                         f"run `agentq models build {name}` first")
    return directory, manifest
