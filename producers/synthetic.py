"""Synthetic job streams: real digits images and sentences of realistic mixed length."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from producers.contract import JobMessage

_SUBJECTS = ["the agent", "our billing service", "a customer", "the scheduler", "my laptop",
             "the support team", "this invoice", "the weather service", "a new user",
             "the database", "the nightly job", "the search index", "an old friend"]
_VERBS = ["needs", "cannot find", "asked about", "reported", "wants to cancel", "is waiting for",
          "updated", "rejected", "summarised", "forgot", "translated", "scheduled"]
_OBJECTS = ["the refund", "a password reset", "the quarterly report", "an urgent ticket",
            "the delivery address", "a broken link", "the shipping estimate", "two invoices",
            "the onboarding email", "a timeout error", "the meeting notes", "a price quote"]
_TAILS = ["before noon", "again", "for the third time this week", "in French",
          "because the page would not load", "while travelling abroad", "without any reason",
          "after the last deployment", "and wants a call back", "so please escalate it"]


def sentence(rng: random.Random) -> str:
    """A sentence of roughly 5 to 120 tokens."""
    parts = [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"]
    n = rng.choices([0, 1, 2, 4, 8, 14], weights=[30, 25, 20, 12, 8, 5])[0]
    parts += [rng.choice(_TAILS) for _ in range(n)]
    if n == 0 and rng.random() < 0.3:
        return rng.choice(_OBJECTS).capitalize() + "?"
    return " ".join(parts).capitalize() + "."


def digits_pixels() -> list[list[float]]:
    from sklearn.datasets import load_digits

    return load_digits().data.tolist()


def synthetic_jobs(model: str, count: int, seed: int = 0, tenant: str | None = None,
                   deadline_ms: int | None = None) -> Iterator[JobMessage]:
    rng = random.Random(seed)
    images = digits_pixels() if model == "digits-mlp" else []
    for i in range(count):
        inp: dict[str, Any]
        if model == "digits-mlp":
            inp = {"pixels": images[i % len(images)]}
        else:
            inp = {"text": sentence(rng)}
        yield JobMessage.new(model, inp, tenant=tenant or f"tenant-{rng.randrange(8)}",
                             deadline_ms=deadline_ms)
