"""Workers pre-process text with the tokenizer and max_length of the build they run."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentq.config import Settings
from models.minilm_l6 import MiniLMHandler
from models.tokenizer import TokenizerNotFound, package_model_dir
from workers.context import WorkerContext

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def package_tokenizer() -> Path:
    try:
        return package_model_dir() / "tokenizer.json"
    except TokenizerNotFound as e:
        pytest.skip(str(e))


def _build_dir(root: Path, name: str, version: str, max_length: int, tokenizer: Path) -> Path:
    d = root / name / version
    d.mkdir(parents=True)
    shutil.copyfile(tokenizer, d / "tokenizer.json")
    (d / "manifest.json").write_text(json.dumps(
        {"variants": [], "tokenizer": "tokenizer.json", "max_length": max_length}))
    return d


def test_a_text_over_256_tokens_is_cut_at_256_and_flagged(package_tokenizer: Path) -> None:
    handler = MiniLMHandler(None)
    prepared = handler.prepare([{"text": "the queue is slow today " * 80}, {"text": "ok"}])
    assert prepared.feeds["input_ids"].shape == (2, 256)
    assert prepared.extras == [{"tokens": 256, "truncated": True},
                               {"tokens": 3, "truncated": False}]


def test_the_worker_handler_follows_the_version_the_engine_loaded(
        package_tokenizer: Path, tmp_path: Path) -> None:
    # Given two builds of minilm-l6 that disagree on max_length, and an engine running the second
    _build_dir(tmp_path, "minilm-l6", "old", 256, package_tokenizer)
    _build_dir(tmp_path, "minilm-l6", "new", 10, package_tokenizer)
    settings = Settings.from_env()
    settings = replace(settings, worker=replace(settings.worker, models_dir=tmp_path))
    engine = SimpleNamespace(device="cpu",
                             model=lambda name: SimpleNamespace(version="new", variant="int8"))
    ctx = WorkerContext(settings, db=None, engine=engine)  # type: ignore[arg-type]
    # When the worker builds its handler, Then it pre-processes as that build does
    handler = ctx.handler("minilm-l6")
    prepared = handler.prepare([{"text": "word " * 40}])
    assert prepared.feeds["input_ids"].shape == (1, 10)
    assert prepared.extras == [{"tokens": 10, "truncated": True}]
