"""Micro-batcher: max_batch or max_wait_ms, whichever first; token-length buckets."""

from bridge.batcher import MicroBatcher


def test_flushes_when_full():
    b = MicroBatcher(max_batch=3, max_wait_ms=1000)
    assert b.add("m", 1, 0) is None
    assert b.add("m", 2, 1) is None
    full = b.add("m", 3, 2)
    assert full is not None and full.items == [1, 2, 3] and len(b) == 0


def test_flushes_on_wait_with_models_separate():
    b = MicroBatcher(max_batch=10, max_wait_ms=20)
    b.add("a", 1, 0)
    b.add("b", 2, 15)
    assert b.due(10) == []
    due = b.due(20)
    assert [(x.model, x.items) for x in due] == [("a", [1])]
    assert [(x.model, x.items) for x in b.due(35)] == [("b", [2])]


def test_token_buckets_keep_similar_lengths_together_and_merge_on_wait():
    b = MicroBatcher(max_batch=2, max_wait_ms=5, bucket_fns={"t": lambda n: n // 10})
    assert b.add("t", 3, 0) is None
    assert b.add("t", 55, 0) is None
    full = b.add("t", 7, 1)  # joins the short bucket, which is now full
    assert full is not None and full.items == [3, 7]
    b.add("t", 12, 2)
    rest = b.due(10)
    assert [x.items for x in rest] == [[12, 55]]  # merged in bucket order up to max_batch


def test_next_deadline_and_drain():
    b = MicroBatcher(max_batch=100, max_wait_ms=50)
    assert b.next_deadline_ms() is None
    b.add("a", 1, 10)
    b.add("b", 2, 30)
    assert b.next_deadline_ms() == 60
    assert sorted(x.model for x in b.drain()) == ["a", "b"]
    assert len(b) == 0


def test_per_model_max_batch():
    b = MicroBatcher(max_batch=100, max_wait_ms=50, max_batch_for={"small": 2})
    b.add("small", 1, 0)
    assert b.add("small", 2, 0) is not None


def test_a_longer_window_holds_the_batch_until_it_passes():
    b = MicroBatcher(max_batch=100, max_wait_ms=20)
    b.add("m", 1, now_ms=0)
    assert b.due(25, wait_ms=200) == [] and b.next_deadline_ms(200) == 200
    assert [x.items for x in b.due(200, wait_ms=200)] == [[1]]


def _padded_batcher(pad: int | None) -> MicroBatcher:
    # items are token counts; bucket = tens; a bucket's upper length = its tens + 9
    return MicroBatcher(max_batch=64, max_wait_ms=5, bucket_fns={"t": lambda n: n // 10},
                        bucket_upper=lambda k: 10 * k + 9, merge_pad_tokens=pad)


def test_a_longer_bucket_joins_only_while_the_padding_it_adds_stays_within_the_limit():
    # Given a window of ten 5-token items, one 15-token item and two 95-token items,
    b = _padded_batcher(pad=64)
    for n in [5] * 10 + [15, 95, 95]:
        b.add("t", n, 0)
    # when it closes, the 15-token bucket joins (10 items x 10 tokens = 100 > 64: it does not),
    batches = [x.items for x in b.due(10)]
    # so: the short ones alone, the 15 alone (1 x 80 = 80 > 64 keeps the 95s apart too).
    assert batches == [[5] * 10, [15], [95, 95]]


def test_few_short_items_still_merge_into_one_batch():
    # Given a window of one item in each of three neighbouring buckets,
    b = _padded_batcher(pad=64)
    for n in (5, 15, 25):
        b.add("t", n, 0)
    # then the padding each adds is small (1 x 10, 2 x 10 tokens): one batch.
    assert [x.items for x in b.due(10)] == [[5, 15, 25]]


def test_without_a_padding_limit_every_bucket_of_the_window_merges():
    b = _padded_batcher(pad=None)
    for n in [5] * 10 + [15, 95, 95]:
        b.add("t", n, 0)
    assert [x.items for x in b.due(10)] == [[5] * 10 + [15, 95, 95]]


def test_the_bridges_batcher_keeps_a_long_text_out_of_a_window_of_short_ones():
    # Given the bridge's own batcher (its settings' padding limit, the catalogue's buckets),
    from types import SimpleNamespace

    from agentq.config import Settings
    from bridge.consumer import make_batcher

    b = make_batcher(Settings())

    def item(text: str):
        return SimpleNamespace(job=SimpleNamespace(input={"text": text}))

    short = [item("reset my password") for _ in range(10)]
    long = item(" ".join(["where is the order I placed last week"] * 12))
    for it in [*short, long]:
        b.add("minilm-l6", it, 0)
    # when the window closes, the short texts and the long one go in separate batches.
    assert [x.items for x in b.due(10_000)] == [short, [long]]
