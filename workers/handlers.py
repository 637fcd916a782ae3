"""Per-model pre- and post-processing around the engine (no torch here).

``prepare`` turns job inputs into feeds and reports items that cannot run (they fail alone);
``results`` turns the engine outputs into result rows for the ``results`` table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass
class Prepared:
    feeds: dict[str, np.ndarray]
    ok: list[int]  # indexes of items that made it into the feeds
    errors: dict[int, str] = field(default_factory=dict)  # index -> reason text
    extras: list[dict[str, Any]] = field(default_factory=list)  # per ok item


class Handler(Protocol):
    def prepare(self, inputs: list[dict[str, Any]]) -> Prepared: ...

    def results(self, outputs: list[np.ndarray], prepared: Prepared) -> list[dict[str, Any]]: ...


class DigitsHandler:
    def prepare(self, inputs: list[dict[str, Any]]) -> Prepared:
        rows, ok, errors = [], [], {}
        for i, inp in enumerate(inputs):
            try:
                arr = np.asarray(inp["pixels"], dtype=np.float32)
                if arr.shape != (64,) or not np.isfinite(arr).all():
                    raise ValueError(f"pixels must be 64 finite numbers, got shape {arr.shape}")
            except (KeyError, TypeError, ValueError) as e:
                errors[i] = f"bad pixels: {e}"
                continue
            rows.append(arr)
            ok.append(i)
        feeds = {"pixels": np.stack(rows) if rows else np.zeros((0, 64), np.float32)}
        return Prepared(feeds, ok, errors, [{} for _ in ok])

    def results(self, outputs: list[np.ndarray], prepared: Prepared) -> list[dict[str, Any]]:
        probs = outputs[0]
        labels = probs.argmax(axis=1)
        return [{"label": int(labels[k]), "probs": probs[k].tolist()} for k in range(len(labels))]


class MiniLMHandler:
    def __init__(self, tokenizer_dir: Path | None = None, max_length: int = 128) -> None:
        from models.tokenizer import TextTokenizer, package_model_dir

        directory = tokenizer_dir or package_model_dir()
        self.tokenizer = TextTokenizer.from_dir(directory, max_length=max_length)

    def prepare(self, inputs: list[dict[str, Any]]) -> Prepared:
        texts, ok, errors = [], [], {}
        for i, inp in enumerate(inputs):
            text = inp.get("text") if isinstance(inp, dict) else None
            if not isinstance(text, str) or not text:
                errors[i] = "input.text must be a non-empty string"
                continue
            texts.append(text)
            ok.append(i)
        enc = self.tokenizer.encode(texts)
        feeds = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
        extras = [{"tokens": int(n), "truncated": bool(t)}
                  for n, t in zip(enc.token_counts, enc.truncated, strict=True)]
        return Prepared(feeds, ok, errors, extras)

    def results(self, outputs: list[np.ndarray], prepared: Prepared) -> list[dict[str, Any]]:
        emb = outputs[0]
        return [{"embedding": emb[k].tolist(), "extra": prepared.extras[k]}
                for k in range(emb.shape[0])]


def make_handler(model: str) -> Handler:
    if model == "digits-mlp":
        return DigitsHandler()
    if model == "minilm-l6":
        return MiniLMHandler()
    raise KeyError(model)
