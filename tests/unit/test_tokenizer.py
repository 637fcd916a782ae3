"""models.tokenizer: our own truncation and padding over the packaged tokenizer.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.tokenizer import TextTokenizer, TokenizerNotFound, package_model_dir
from tests.support import require

CLS, SEP, PAD = 101, 102, 0


@pytest.fixture(scope="module")
def tokenizer_path() -> Path:
    try:
        return package_model_dir() / "tokenizer.json"
    except TokenizerNotFound as e:
        require(False, str(e))
        raise


def test_batch_is_padded_to_its_longest_item_not_to_128(tokenizer_path: Path) -> None:
    tok = TextTokenizer(tokenizer_path)
    enc = tok.encode(["hi", "the quick brown fox jumps"])
    assert enc.input_ids.dtype == np.int64 and enc.attention_mask.dtype == np.int64
    assert enc.input_ids.shape == enc.attention_mask.shape == (2, 7)  # [CLS] 5 words [SEP]
    assert enc.input_ids[0].tolist()[:3] == [CLS, 7632, SEP]
    assert enc.input_ids[0, 3:].tolist() == [PAD] * 4
    assert enc.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    assert enc.token_counts.tolist() == [3, 7]
    assert not enc.truncated.any()


def test_long_text_is_truncated_to_max_length_and_flagged(tokenizer_path: Path) -> None:
    tok = TextTokenizer(tokenizer_path, max_length=16)
    enc = tok.encode(["word " * 100, "short text"])
    assert enc.padded_length == 16
    assert enc.truncated.tolist() == [True, False]
    assert enc.token_counts.tolist() == [16, 4]
    assert enc.input_ids[0, 0] == CLS and enc.input_ids[0, -1] == SEP


def test_text_of_exactly_max_length_is_not_flagged(tokenizer_path: Path) -> None:
    tok = TextTokenizer(tokenizer_path, max_length=7)
    enc = tok.encode(["the quick brown fox jumps", "the quick brown fox jumps over"])
    assert enc.truncated.tolist() == [False, True]
    assert enc.token_counts.tolist() == [7, 7]


def test_default_max_length_is_the_models_256(tokenizer_path: Path) -> None:
    enc = TextTokenizer(tokenizer_path).encode(["many words here " * 200])
    assert enc.padded_length == 256 and enc.truncated.tolist() == [True]
    config = json.loads((tokenizer_path.parent / "sentence_bert_config.json").read_text())
    assert config["max_seq_length"] == 256


def test_from_artifacts_takes_the_tokenizer_and_max_length_the_build_recorded(
        tokenizer_path: Path, tmp_path: Path) -> None:
    # Given a build directory whose manifest says max_length 12 and names its tokenizer copy
    shutil.copyfile(tokenizer_path, tmp_path / "tok.json")
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"variants": [], "tokenizer": "tok.json", "max_length": 12}))
    # When a worker builds its tokenizer from it, Then it cuts at 12, not at the default
    tok = TextTokenizer.from_artifacts(tmp_path)
    assert tok.path == tmp_path / "tok.json" and tok.max_length == 12
    enc = tok.encode(["word " * 50])
    assert enc.padded_length == 12 and enc.truncated.tolist() == [True]


def test_from_artifacts_without_a_complete_build_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerNotFound):
        TextTokenizer.from_artifacts(tmp_path)


def test_pad_to_multiple_rounds_the_batch_length_up(tokenizer_path: Path) -> None:
    enc = TextTokenizer(tokenizer_path, pad_to_multiple_of=8).encode(["hi", "hello there"])
    assert enc.padded_length == 8


def test_empty_batch_gives_empty_arrays(tokenizer_path: Path) -> None:
    enc = TextTokenizer(tokenizer_path).encode([])
    assert enc.input_ids.shape[0] == 0 and enc.truncated.shape == (0,)


def test_a_single_string_is_refused_rather_than_split_into_characters(
        tokenizer_path: Path) -> None:
    with pytest.raises(TypeError):
        TextTokenizer(tokenizer_path).encode("hello")  # type: ignore[arg-type]


def test_max_length_beyond_the_position_table_is_refused(tokenizer_path: Path) -> None:
    with pytest.raises(ValueError):
        TextTokenizer(tokenizer_path, max_length=513)


def test_missing_tokenizer_file_raises_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerNotFound):
        TextTokenizer(tmp_path / "tokenizer.json")


def test_tokenizer_module_does_not_import_torch() -> None:
    code = "import sys, models.tokenizer; sys.exit(1 if 'torch' in sys.modules else 0)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60).returncode == 0
