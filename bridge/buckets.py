"""Token-length bucketing for text models: jobs of similar length share a batch, so a batch padded
to its longest item carries little padding (the biggest cost lever of a transformer).

The bridge counts tokens with the counter of the model's catalogue entry (its own tokenizer,
no torch; tens of microseconds per short text). The worker tokenizes again for inference; only the
bucket key is computed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.catalog import CATALOG, ModelSpec

# Bucket edges (exclusive upper bounds, in tokens incl. [CLS]/[SEP]): narrow where most texts
# are, wider for long texts, where a few tokens of padding matter less relatively; the last
# bucket holds 224..256 (minilm-l6's context: longer texts are truncated to 256).
EDGES: tuple[int, ...] = (8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224)


def token_bucket(tokens: int, edges: Sequence[int] = EDGES) -> int:
    """Index of the bucket holding ``tokens``; ``len(edges)`` for the longest texts."""
    for i, edge in enumerate(edges):
        if tokens < edge:
            return i
    return len(edges)


CONTEXT = 256  # the longest bucket's upper bound: the text models' context (longer is truncated)


def bucket_upper(index: int, edges: Sequence[int] = EDGES, context: int = CONTEXT) -> int:
    """The most tokens an item of bucket ``index`` can have (what a batch is padded to)."""
    return edges[index] - 1 if index < len(edges) else context


def _bucket_of_item(count: Callable[[dict[str, Any]], int]) -> Callable[[Any], int]:
    return lambda item: token_bucket(count(item.job.input))


def bucket_fns(catalog: Mapping[str, ModelSpec] = CATALOG) -> dict[str, Callable[[Any], int]]:
    """Bucket functions for the micro-batcher, by model name: the token bucket of a bridge item
    (``item.job.input``) for every model whose catalogue entry counts tokens."""
    fns: dict[str, Callable[[Any], int]] = {}
    for name, entry in catalog.items():
        if entry.make_token_counter is not None:
            fns[name] = _bucket_of_item(entry.make_token_counter())
    return fns


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
