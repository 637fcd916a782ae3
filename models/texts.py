"""Sample texts of realistic mixed length (about 5 to 120 tokens), for synthetic job streams,
benchmarks and tests of text models."""

from __future__ import annotations

import random

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
