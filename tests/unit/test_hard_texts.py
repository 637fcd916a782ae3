"""The hard-text set of the minilm-l6 gate covers what agents send, and each seed is its own."""

from __future__ import annotations

import unicodedata

import pytest

from models.hard_texts import KINDS, SCRIPTS, hard_texts
from models.tokenizer import TextTokenizer, TokenizerNotFound, package_model_dir

pytestmark = pytest.mark.timeout(60)

NEEDED = {"short", "punct", "emoji", "script", "code", "url", "log", "long"}


def _script_of(ch: str) -> str:
    return unicodedata.name(ch, "?").split(" ")[0]


def test_every_kind_and_at_least_five_scripts_are_in_a_set():
    texts, kinds = hard_texts(7)
    assert NEEDED <= set(kinds) == set(KINDS)
    assert len(texts) == len(set(texts)) >= 250
    scripts = {_script_of(ch) for t, k in zip(texts, kinds, strict=True) if k == "script"
               for ch in t if ch.isalpha()}
    assert {"LATIN", "CYRILLIC", "ARABIC", "CJK", "DEVANAGARI", "GREEK"} <= scripts
    assert len(SCRIPTS) >= 5
    assert any(any(unicodedata.category(ch) == "So" for ch in t)
               for t, k in zip(texts, kinds, strict=True) if k == "emoji")
    assert all(not any(ch.isalnum() for ch in t)
               for t, k in zip(texts, kinds, strict=True) if k == "punct")


def test_long_texts_overflow_the_256_token_context():
    try:
        tok = TextTokenizer(package_model_dir() / "tokenizer.json", max_length=256)
    except TokenizerNotFound as e:
        pytest.skip(str(e))
    texts, kinds = hard_texts(7)
    long_texts = [t for t, k in zip(texts, kinds, strict=True) if k == "long"]
    assert tok.encode(long_texts).truncated.all()


def test_seeds_are_deterministic_and_differ():
    assert hard_texts(7) == hard_texts(7)
    a, b = set(hard_texts(7)[0]), set(hard_texts(1001)[0])
    assert len(a & b) < 0.5 * len(a)  # calibration (1001) and gate (7) mostly differ
