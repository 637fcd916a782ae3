"""Defence in depth for ledger writes: when the database refuses a batch for what is in it (not
because it is unreachable), find the rows it refuses by bisection and write all the others.

A refused row is one record the edge should have refused; the caller ends it as ``rejected`` with
the database's reason and a DLQ copy, and every other job of the batch carries on. A batch of n
rows with k bad ones costs about ``2k·log2(n)`` extra statements, only when it happens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from agentq.log import get_logger
from storage.errors import StorageRefused

log = get_logger("agentq.bridge")

R = TypeVar("R")
Row = dict[str, Any]


def write_isolating(write: Callable[[Sequence[Row]], set[R]], rows: Sequence[Row]
                    ) -> tuple[set[R], list[tuple[Row, str]]]:
    """``write(rows)`` (each call its own transaction; transient errors are the caller's
    ``write`` to retry); on ``StorageRefused``, halves the rows until each refused row stands
    alone. Returns (the union of what the writes returned, [(refused row, reason)])."""
    try:
        return write(rows), []
    except StorageRefused as e:
        if len(rows) == 1:
            log.warning("ledger_refused_row", job_id=rows[0].get("job_id"), error=str(e)[:300])
            return set(), [(dict(rows[0]), str(e))]
        mid = len(rows) // 2
        left, bad_left = write_isolating(write, rows[:mid])
        right, bad_right = write_isolating(write, rows[mid:])
        return left | right, bad_left + bad_right
