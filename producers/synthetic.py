"""Synthetic job streams for any catalogued model (its entry makes the sample inputs)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from models.catalog import CATALOG
from models.texts import sentence
from producers.contract import JobMessage

__all__ = ["sentence", "synthetic_jobs"]


def synthetic_jobs(model: str, count: int, seed: int = 0, tenant: str | None = None,
                   deadline_ms: int | None = None) -> Iterator[JobMessage]:
    rng = random.Random(seed)
    make = CATALOG[model].sample_inputs
    if make is None:
        raise ValueError(f"model {model!r} has no sample inputs in its catalogue entry")
    inputs = make(rng)
    for _ in range(count):
        yield JobMessage.new(model, next(inputs), tenant=tenant or f"tenant-{rng.randrange(8)}",
                             deadline_ms=deadline_ms)
