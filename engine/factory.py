"""Which engine a pool process uses: in-process sessions or the shared engine process."""

from __future__ import annotations

from typing import Any

from agentq.config import EngineOptions, WorkerSettings


def resolve_mode(mode: str, device: str) -> str:
    """``auto`` (the default): the engine process on CUDA (one process owns the device; pool
    processes never initialise CUDA), in-process sessions on CPU. On CPU the engine is the default
    only when it beats in-process by >= 5 % end to end on every model (``bench.shm_bench``
    ``default_modes``); measured (see the module docstring) it did not: digits-mlp 1.20x, minilm-l6
    0.94x (median paired ratios, 2 shared CPUs), so a tie goes to in-process sessions: one process
    fewer, no socket hop, no engine restart path. ``shared`` stays available on CPU (it keeps one
    copy of each model per host, and was 1.9x on the minilm worker path)."""
    if mode in ("inprocess", "shared"):
        return mode
    if mode != "auto":
        raise ValueError(f"engine_mode must be inprocess, shared or auto, not {mode!r}")
    if device == "cpu":
        return "inprocess"
    import onnxruntime as ort  # lists providers only; CUDA is not initialised by this

    return "shared" if "CUDAExecutionProvider" in ort.get_available_providers() else "inprocess"


def open_engine(settings: WorkerSettings, db: Any, options: EngineOptions | None = None) -> Any:
    """The engine a pool process uses, by ``settings.engine_mode``: an ``EngineClient`` or an
    in-process ``InferenceEngine`` (both have ``run(model, feeds)``, ``model``, ``device``)."""
    if resolve_mode(settings.engine_mode, settings.device) == "shared":
        from engine.client import EngineClient

        return EngineClient(settings, options)
    from engine.sessions import InferenceEngine

    return InferenceEngine(settings, db)
