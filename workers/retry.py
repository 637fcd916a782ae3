"""Retry policy for jobs that fail on a worker (DESIGN §4.6): exponential backoff with full
jitter, until a job has used ``max_attempts``; then it is ``failed`` with its last error and a
copy goes to the DLQ topic (``producers.dlq.dead_letter``)."""

from __future__ import annotations

import random


def backoff_s(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2 ** attempt)))


def retry_batch_id(batch_id: str, attempts: int) -> str:
    """The id of the batch that runs a batch's retried jobs again."""
    return f"{batch_id.split('~r')[0]}~r{attempts}"
