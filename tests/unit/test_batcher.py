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
