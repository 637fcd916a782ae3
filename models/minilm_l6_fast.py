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

from dataclasses import replace
from pathlib import Path
from typing import Any

from models import minilm_l6
from models.spec import Step


def _version() -> str:
    from models import minilm_fast_build

    return minilm_fast_build.version()


def _build(out: Path, step: Step) -> dict[str, Any]:
    from models import minilm_fast_build

    return minilm_fast_build.build(out, step)


# minilm-l6's entry (input, checks, handler, token counter, samples, result columns) with its
# own name, build and version; timed side by side with the exact tier's registered graphs.
SPEC = replace(minilm_l6.SPEC, name="minilm-l6-fast", summary=__doc__.split("\n")[0],
               version=_version, build=_build, requires=("minilm-l6",))
