"""minilm-l6-fast: a faster tier of the minilm-l6 embeddings (same 384-d space, same tokenizer).

Agents choose it by name when latency or cost matters more than the last digits of the cosine:
its embeddings are comparable with minilm-l6's (mean cosine >= 0.97 to the PyTorch fp32 model on
the hard texts and on the paraphrase set, retrieval top-1 within 0.02 of fp32's), so an index
built with one can be queried with the other. ``agentq models build`` makes five candidates from
the minilm-l6 weights — all-layer int8, a structurally pruned encoder and a distilled 4-layer
student, the last two in fp32 and int8 — gates each on the tier gate and activates the fastest
that passes (``models.minilm_fast_build``; the registry keeps every candidate with its metrics).
``input`` and results are minilm-l6's: ``{"text": "..."}`` → ``embedding`` (384 floats, unit
length) and ``extra`` ``{"tokens": n, "truncated": bool}``. CPU only (no fp16 variant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.minilm_l6 import MiniLMHandler, check_input, make_token_counter, sample_inputs
from models.spec import ModelSpec, Step


def _version() -> str:
    from models import minilm_fast_build

    return minilm_fast_build.version()


def _build(out: Path, step: Step) -> dict[str, Any]:
    from models import minilm_fast_build

    return minilm_fast_build.build(out, step)


SPEC = ModelSpec(
    name="minilm-l6-fast",
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
    # Timed side by side with the exact tier's registered fp32 and int8 graphs.
    requires=("minilm-l6",),
)
