"""What a worker process holds for its lifetime: the database engine, the inference engine and
the model handlers (arq's ``ctx``), passed to each task explicitly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from agentq.config import Settings
from agentq.log import get_logger
from engine.errors import EngineUnavailable
from engine.factory import open_engine
from models.artifacts import artifact_dir
from models.catalog import CATALOG, Handler
from storage.db import make_engine

log = get_logger("agentq.worker")


@dataclass
class WorkerContext:
    settings: Settings
    db: Engine
    engine: Any  # InferenceEngine or EngineClient, by settings.worker.engine_mode
    handlers: dict[str, Handler] = field(default_factory=dict)
    _dlq: Any = None
    _dlq_tried_at: float = 0.0

    @classmethod
    def start(cls, settings: Settings) -> WorkerContext:
        db = make_engine(settings.worker_database_url, pool_size=2, app_name="agentq-worker")
        engine = open_engine(settings.worker, db, settings.engine)
        ctx = cls(settings, db, engine)
        for name in CATALOG:
            try:
                engine.model(name)
                ctx.handler(name)
            except Exception as e:  # a missing model must not stop the others from loading
                log.warning("model_unavailable_at_start", model=name, error=str(e))
        return ctx

    def handler(self, model: str) -> Handler:
        """The model's handler, built once from the artifacts of the build the engine runs (its
        tokenizer and ``max_length``), so a rebuilt model and its pre-processing never differ."""
        h = self.handlers.get(model)
        if h is None:
            h = self.handlers[model] = CATALOG[model].make_handler(self.artifact_dir(model))
        return h

    def artifact_dir(self, model: str) -> Path:
        """The directory of the build the engine loaded for ``model`` (its version), or, while a
        shared engine is still connecting, of the registry's active variant for this device.
        Raises ``EngineUnavailable`` (retryable) when the model is not registered."""
        info = self.engine.model(model)
        version = getattr(info, "version", None) or (
            info.get("version") if isinstance(info, dict) else None)
        if not version:
            from engine.sessions import pick_device
            from storage.errors import ModelNotRegistered
            from storage.registry import active_variant

            device = self.engine.device
            device = device if device in ("cpu", "cuda") else pick_device(device)
            try:
                with self.db.connect() as conn:
                    version = active_variant(conn, model, device)["version"]
            except ModelNotRegistered as e:
                raise EngineUnavailable(str(e)) from e
        return artifact_dir(Path(self.settings.worker.models_dir), model, str(version))

    def dead_letters(self) -> Any:
        """The DLQ producer, created on first use (Kafka may be down at start-up); None while
        Kafka is unreachable (retried at most every 10 s)."""
        if self._dlq is None and time.monotonic() - self._dlq_tried_at > 10:
            self._dlq_tried_at = time.monotonic()
            try:
                from producers.dlq import DeadLetters

                self._dlq = DeadLetters(self.settings.kafka)
            except Exception as e:  # a side concern: failed jobs are in the ledger already
                log.warning("dlq_unavailable", error=str(e)[:200])
        return self._dlq

    def close(self) -> None:
        if self._dlq is not None:
            self._dlq.close()
        if hasattr(self.engine, "close"):
            self.engine.close()
        self.db.dispose()

    def describe(self) -> dict[str, Any]:
        return {"device": self.engine.device, "models": sorted(self.handlers)}
