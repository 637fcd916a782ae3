"""In-process inference engine: one ONNX Runtime session per model per process.

Sessions are built once, at worker start-up, from the registry's active variant for this
process's device. The execution provider is chosen by what is available (CUDA when
onnxruntime-gpu and a GPU are present, else CPU) and logged once.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from sqlalchemy import Engine

from agentq.config import WorkerSettings
from agentq.log import get_logger
from engine.errors import EngineUnavailable
from storage.registry import active_variant

log = get_logger("agentq.engine")


def pick_device(requested: str = "auto") -> str:
    available = ort.get_available_providers()
    if requested == "cuda" and "CUDAExecutionProvider" not in available:
        raise EngineUnavailable("device cuda requested but onnxruntime has no CUDA provider")
    if requested in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return "cuda"
    return "cpu"


def providers_for(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else [
        "CPUExecutionProvider"]


def session_options(settings: WorkerSettings,
                    config: dict[str, str] | None = None) -> ort.SessionOptions:
    """Session options from the worker settings; ``config``: extra ORT session config entries
    (the engine process turns intra-op spinning off, see ``engine.server``)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = settings.intra_op_threads
    opts.inter_op_num_threads = settings.inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return opts


class LoadedModel:
    """A warm session plus what the registry says about it."""

    def __init__(self, name: str, row: dict[str, Any], session: ort.InferenceSession) -> None:
        self.name = name
        self.variant = row["variant"]
        self.version = row["version"]
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)


class InferenceEngine:
    def __init__(self, settings: WorkerSettings, db: Engine,
                 session_config: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.db = db
        self.session_config = dict(session_config or {})
        self.device = pick_device(settings.device)
        self._models: dict[str, LoadedModel] = {}
        log.info("engine_device", device=self.device, providers=providers_for(self.device))

    def load(self, names: Iterable[str]) -> None:
        for name in names:
            try:
                self.model(name)
            except EngineUnavailable as e:
                log.warning("model_not_loaded", model=name, error=str(e))

    def model(self, name: str) -> LoadedModel:
        loaded = self._models.get(name)
        if loaded is not None:
            return loaded
        from storage.errors import ModelNotRegistered

        try:
            with self.db.connect() as conn:
                row = active_variant(conn, name, self.device)
        except ModelNotRegistered as e:
            raise EngineUnavailable(str(e)) from e
        path = Path(self.settings.models_dir) / row["path"]
        if not path.exists():
            raise EngineUnavailable(
                f"model file {path} for {name!r} is missing; run `agentq models build {name}` "
                f"with AGENTQ_MODELS_DIR={self.settings.models_dir}"
            )
        session = ort.InferenceSession(str(path), sess_options=session_options(self.settings,
                                                                    self.session_config),
                                       providers=providers_for(self.device))
        loaded = LoadedModel(name, row, session)
        self._models[name] = loaded
        log.info("model_loaded", model=name, variant=loaded.variant, version=loaded.version,
                 device=self.device)
        return loaded

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.model(name).run(feeds)
