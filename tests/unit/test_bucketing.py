"""Token-length buckets: similar lengths share a batch, so padded tokens drop."""

import random

import pytest

from bridge.batcher import MicroBatcher
from bridge.buckets import EDGES, padding_of, token_bucket
from models.minilm_l6 import estimate_tokens, make_token_counter
from producers.synthetic import sentence

pytestmark = pytest.mark.timeout(60)


def test_token_bucket_edges_are_monotonic_and_cover_every_length():
    keys = [token_bucket(n) for n in range(0, 300)]
    assert keys == sorted(keys)
    assert keys[0] == 0 and keys[-1] == len(EDGES)
    assert token_bucket(7) != token_bucket(8)


def test_padding_counts_tokens_padded_to_each_batch_longest():
    p = padding_of([[5, 10], [3, 3, 3], []])
    assert (p.real, p.padded) == (24, 29)
    assert p.ratio == pytest.approx(29 / 24)


def _stream(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [sentence(rng) * rng.choice([1, 1, 2, 4]) for _ in range(n)]


def _batches(texts: list[str], key, counter, max_batch: int = 32,
             edges=EDGES) -> list[list[int]]:
    """Token lengths of the batches a micro-batcher forms when 200 jobs arrive per wait window
    (a backlog); ``key`` counts tokens for bucketing (None = arrival order)."""
    fns = {"m": lambda t: token_bucket(key(t), edges)} if key else None
    b = MicroBatcher(max_batch, max_wait_ms=20, bucket_fns=fns)
    out = []
    for i, t in enumerate(texts):
        full = b.add("m", t, now_ms=(i // 200) * 20)
        if full:
            out.append(full)
        if i % 200 == 199:
            out += b.due((i // 200) * 20 + 20)
    out += b.drain()
    return [[counter(t) for t in batch.items] for batch in out]


@pytest.mark.parametrize("real_tokenizer", [True, False])
def test_bucketing_reduces_padded_tokens_on_a_mixed_length_stream(real_tokenizer):
    # Given a mixed-length stream (5..120 tokens), counted with the real tokenizer,
    count = make_token_counter()

    def real(text: str) -> int:
        return count({"text": text})

    texts = _stream(2000)
    lengths = [real(t) for t in texts]
    assert min(lengths) <= 8 and max(lengths) >= 100
    # when batched in arrival order versus in token buckets (keyed by the tokenizer or by the
    # character estimate),
    fifo = padding_of(_batches(texts, None, real))
    key = real if real_tokenizer else estimate_tokens
    bucketed = padding_of(_batches(texts, key, real))
    # then the same real tokens need far fewer padded tokens.
    assert bucketed.real == fifo.real
    assert fifo.ratio > 2.0
    assert bucketed.padded < 0.6 * fifo.padded


def test_texts_of_128_to_256_tokens_are_bucketed_too_and_counted_truncated_at_256():
    # Given a stream with many long texts, counted as the model sees them (cut at 256),
    count = make_token_counter()

    def real(text: str) -> int:
        return count({"text": text})

    rng = random.Random(5)
    texts = [sentence(rng) * rng.choice([1, 2, 4, 8, 12]) for _ in range(1500)]
    lengths = [real(t) for t in texts]
    assert max(lengths) == 256 and sum(n >= 128 for n in lengths) >= 200
    assert len({token_bucket(n) for n in lengths if n >= 128}) >= 4
    # when batched in token buckets, with edges up to 224 or only up to 112 (one bucket for all
    # texts of 112..256 tokens),
    fifo = padding_of(_batches(texts, None, real))
    bucketed = padding_of(_batches(texts, real, real))
    short_edges = padding_of(_batches(texts, real, real, edges=[e for e in EDGES if e <= 112]))
    # then the edges over 128 cut padding further, and far below arrival order.
    assert bucketed.real == short_edges.real == fifo.real
    assert bucketed.padded < 0.9 * short_edges.padded
    assert bucketed.padded < 0.6 * fifo.padded
