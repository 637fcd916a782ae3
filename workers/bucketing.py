"""Token-length bucketing for text models: jobs of similar length share a batch, so a batch padded
to its longest item carries little padding (the biggest cost lever of a transformer).

The bridge counts tokens with the model's own tokenizer (``tokenizers``, no torch; tens of
microseconds per short text) and falls back to a character estimate when the tokenizer is not
installed. The worker tokenizes again for inference; only the bucket key is computed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agentq.log import get_logger

log = get_logger("agentq.bucketing")

MAX_TOKENS = 128
# Bucket edges (exclusive upper bounds, in tokens incl. [CLS]/[SEP]): narrow where most texts
# are, wider for long texts, where a few tokens of padding matter less relatively.
EDGES: tuple[int, ...] = (8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 112)


def token_bucket(tokens: int, edges: Sequence[int] = EDGES) -> int:
    """Index of the bucket holding ``tokens``; ``len(edges)`` for the longest texts."""
    for i, edge in enumerate(edges):
        if tokens < edge:
            return i
    return len(edges)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate for English WordPiece: ~4.2 characters per token, plus 2."""
    return min(MAX_TOKENS, 2 + max(1, round(len(text) / 4.2)))


class TokenCounter:
    """Counts tokens as the model's tokenizer would (truncated at ``max_tokens``)."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self._count = count

    def __call__(self, text: str) -> int:
        return self._count(text)

    @classmethod
    def for_minilm(cls, max_tokens: int = MAX_TOKENS) -> TokenCounter:
        try:
            from tokenizers import Tokenizer

            from models.tokenizer import package_model_dir

            tok = Tokenizer.from_file(str(package_model_dir() / "tokenizer.json"))
            tok.no_padding()
            tok.enable_truncation(max_length=max_tokens)
        except Exception as e:  # no tokenizer installed: estimate instead of failing the bridge
            log.warning("tokenizer_unavailable_estimating", error=str(e)[:200])
            return cls(estimate_tokens)
        return cls(lambda text: len(tok.encode(text).ids))


def text_of(item: Any) -> str:
    """The text of a bridge item (``Item.job.input['text']``) or of a plain dict/str."""
    job = getattr(item, "job", None)
    inp = job.input if job is not None else item
    if isinstance(inp, dict):
        return str(inp.get("text", ""))
    return str(inp)


def bucket_fns(counter: TokenCounter | None = None) -> dict[str, Callable[[Any], int]]:
    """Bucket functions for the micro-batcher, by model name."""
    count = counter or TokenCounter.for_minilm()
    return {"minilm-l6": lambda item: token_bucket(count(text_of(item)))}


@dataclass(frozen=True)
class Padding:
    """Tokens in batches padded to each batch's longest item."""

    real: int
    padded: int

    @property
    def ratio(self) -> float:
        """Padded tokens per real token (1.0 = no padding)."""
        return self.padded / self.real if self.real else 1.0


def padding_of(batches: Iterable[Sequence[int]]) -> Padding:
    """Real and padded token counts of batches given as lists of per-item token lengths."""
    real = padded = 0
    for lengths in batches:
        if lengths:
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
    return Padding(real, padded)
