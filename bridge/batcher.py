"""Per-model micro-batcher: flush on ``max_batch`` or ``max_wait_ms``, whichever comes first.

Within a model, jobs of text models go to token-length buckets so that a batch carries little
padding; a bucket is flushed as soon as it is full, and every bucket of a model is flushed when
its oldest job has waited ``max_wait_ms``. Pure logic: time is passed in, nothing is sent here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BucketFn = Callable[[Any], int]


@dataclass
class Batch:
    model: str
    items: list[Any]
    opened_ms: float


@dataclass
class _Bucket:
    items: list[Any] = field(default_factory=list)
    opened_ms: float = 0.0


class MicroBatcher:
    def __init__(self, max_batch: int, max_wait_ms: float,
                 bucket_fns: dict[str, BucketFn] | None = None,
                 max_batch_for: dict[str, int] | None = None,
                 bucket_upper: Callable[[int], int] | None = None,
                 merge_pad_tokens: int | None = None) -> None:
        self.max_batch = max_batch
        # When a window closes, a model's buckets are merged in length order; with
        # ``merge_pad_tokens`` (and ``bucket_upper``: bucket index → its longest length) a bucket
        # of a bucketed model joins the batch being formed only while the padding it adds to the
        # items already there (their count × the length difference) stays within it — beyond,
        # the padded tokens cost more than one more batch does.
        self._bucket_upper = bucket_upper
        self.merge_pad_tokens = merge_pad_tokens
        self.max_wait_ms = max_wait_ms
        self._bucket_fns = bucket_fns or {}
        self._max_for = max_batch_for or {}
        self._buckets: dict[tuple[str, int], _Bucket] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def limit(self, model: str) -> int:
        return self._max_for.get(model, self.max_batch)

    def add(self, model: str, item: Any, now_ms: float) -> Batch | None:
        """Add one job; returns a full batch when its bucket reached the model's max batch."""
        fn = self._bucket_fns.get(model)
        key = (model, fn(item) if fn else 0)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(opened_ms=now_ms)
        bucket.items.append(item)
        self._size += 1
        if len(bucket.items) >= self.limit(model):
            del self._buckets[key]
            self._size -= len(bucket.items)
            return Batch(model, bucket.items, bucket.opened_ms)
        return None

    def due(self, now_ms: float, wait_ms: float | None = None) -> list[Batch]:
        """Batches whose oldest job waited max_wait_ms (or ``wait_ms``, e.g. a longer window
        while workers are busy); a model's smaller buckets go along, merged in bucket order up
        to the max batch, so short waits do not fragment batches."""
        wait = self.max_wait_ms if wait_ms is None else wait_ms
        expired_models = {m for (m, _), b in self._buckets.items()
                          if now_ms - b.opened_ms >= wait}
        return [b for m in sorted(expired_models) for b in self._drain_model(m)]

    def drain(self) -> list[Batch]:
        """Everything buffered, e.g. before a partition revoke or on shutdown."""
        models = sorted({m for m, _ in self._buckets})
        return [b for m in models for b in self._drain_model(m)]

    def next_deadline_ms(self, wait_ms: float | None = None) -> float | None:
        if not self._buckets:
            return None
        wait = self.max_wait_ms if wait_ms is None else wait_ms
        return min(b.opened_ms for b in self._buckets.values()) + wait

    def _drain_model(self, model: str) -> list[Batch]:
        keys = sorted(k for k in self._buckets if k[0] == model)
        out: list[Batch] = []
        current: list[Any] = []
        opened = float("inf")
        limit = self.limit(model)
        pad_limit = self.merge_pad_tokens if model in self._bucket_fns else None
        length_of = self._bucket_upper
        padded_to = 0  # the current batch's longest bucket length
        for key in keys:
            bucket = self._buckets.pop(key)
            self._size -= len(bucket.items)
            if pad_limit is not None and length_of is not None:
                length = length_of(key[1])
                if current and len(current) * (length - padded_to) > pad_limit:
                    out.append(Batch(model, current, opened))
                    current, opened = [], float("inf")
                padded_to = length
            for item in bucket.items:
                current.append(item)
                opened = min(opened, bucket.opened_ms)
                if len(current) >= limit:
                    out.append(Batch(model, current, opened))
                    current, opened = [], float("inf")
        if current:
            out.append(Batch(model, current, opened))
        return out
