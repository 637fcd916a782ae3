"""Safe offset tracking: commit only below the lowest record not yet durable.

Per partition, every received offset is pending until its record is durable in the ledger or on
the DLQ. The committable offset is the lowest pending offset (or one past the highest seen when
nothing is pending), so batches may complete in any order without skipping a record. Each
assignment has a generation: a completion that arrives after its partition was revoked (a late
batch after a rebalance) is ignored instead of committing an offset the bridge no longer owns.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class _Partition:
    generation: int
    pending: set[int] = field(default_factory=set)
    heap: list[int] = field(default_factory=list)
    next_offset: int | None = None  # one past the highest offset seen
    committed: int | None = None

    def low(self) -> int | None:
        while self.heap and self.heap[0] not in self.pending:
            heapq.heappop(self.heap)
        if self.heap:
            return self.heap[0]
        return self.next_offset


@dataclass(frozen=True)
class Ticket:
    """Identifies one received record for its later completion."""

    partition: Hashable
    offset: int
    generation: int


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[Hashable, _Partition] = {}
        self._generation = 0

    def assign(self, partitions: list[Hashable]) -> None:
        for p in partitions:
            if p not in self._parts:
                self._generation += 1
                self._parts[p] = _Partition(self._generation)

    def revoke(self, partitions: list[Hashable]) -> None:
        for p in partitions:
            self._parts.pop(p, None)

    def owned(self) -> list[Hashable]:
        return list(self._parts)

    def received(self, partition: Hashable, offset: int) -> Ticket:
        part = self._parts.get(partition)
        if part is None:
            self.assign([partition])
            part = self._parts[partition]
        part.pending.add(offset)
        heapq.heappush(part.heap, offset)
        if part.next_offset is None or offset >= part.next_offset:
            part.next_offset = offset + 1
        return Ticket(partition, offset, part.generation)

    def done(self, ticket: Ticket) -> bool:
        """Mark a record durable; False when its partition was revoked since (ignored)."""
        part = self._parts.get(ticket.partition)
        if part is None or part.generation != ticket.generation:
            return False
        part.pending.discard(ticket.offset)
        return True

    def pending_count(self, partition: Hashable | None = None) -> int:
        if partition is not None:
            part = self._parts.get(partition)
            return len(part.pending) if part else 0
        return sum(len(p.pending) for p in self._parts.values())

    def committable(self) -> dict[Hashable, int]:
        """Offsets that advanced since the last ``mark_committed`` (Kafka's next-to-read)."""
        out = {}
        for key, part in self._parts.items():
            low = part.low()
            if low is not None and (part.committed is None or low > part.committed):
                out[key] = low
        return out

    def mark_committed(self, offsets: dict[Hashable, int]) -> None:
        for key, off in offsets.items():
            part = self._parts.get(key)
            if part is not None:
                part.committed = off
