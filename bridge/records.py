"""What the bridge holds for one consumed record: an accepted job (``Item``) or a refusal
(``Reject``), with the record's coordinates and times."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bridge.offsets import Ticket
from producers.contract import JobMessage, Rejection
from producers.dlq import REPLAY_HEADER
from workers.batch import utc_from_ms

REJECT_NS = uuid.UUID("6f1c2d4e-7a8b-4c9d-8e0f-123456789abc")
ts = utc_from_ms
# A record's CreateTime is whatever its client set: one more than a year before it was received
# or over an hour after is a wrong clock, not a time to measure latency from.
PLAUSIBLE_PAST_MS = 365 * 86_400_000
PLAUSIBLE_FUTURE_MS = 3_600_000


def produced_ms(record_ts: int | None, received_ms: float) -> int | None:
    """The record's timestamp as its produce time, or None when absent or implausible."""
    if not record_ts or record_ts <= 0:
        return None
    if not received_ms - PLAUSIBLE_PAST_MS <= record_ts <= received_ms + PLAUSIBLE_FUTURE_MS:
        return None
    return int(record_ts)


def record_job_id(topic: str, partition: int, offset: int) -> str:
    """Stable id for a record that carries no usable job_id, so redelivery collapses."""
    return str(uuid.uuid5(REJECT_NS, f"{topic}:{partition}:{offset}"))


@dataclass
class Item:
    ticket: Ticket
    job: JobMessage
    topic: str
    partition: int
    offset: int
    produced_ms: int | None
    received_ms: float
    replay: bool = False  # re-submitted from the DLQ (``agentq dlq replay``)


def is_replay(headers: Any) -> bool:
    return any(k == REPLAY_HEADER for k, _ in headers or ())


@dataclass
class Reject:
    ticket: Ticket
    rejection: Rejection
    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    produced_ms: int | None
    received_ms: float
    model: str | None = None

    @classmethod
    def of(cls, item: Item, rejection: Rejection) -> Reject:
        """A refusal of an accepted job found later (expired while batching, refused by the
        ledger, a duplicate job_id with other content)."""
        return cls(item.ticket, rejection, item.job.encode(), None, item.topic, item.partition,
                   item.offset, item.produced_ms, item.received_ms, item.job.model)

    @property
    def ledger_id(self) -> str:
        """The job_id of its ledger row: the message's own, or one derived from the record. A
        duplicate job_id refused for other content gets the record's id, so it never overwrites
        the first job's row."""
        own = self.rejection.job_id
        if own and not self.rejection.fields.get("keyed_by_record"):
            return own
        return record_job_id(self.topic, self.partition, self.offset)
