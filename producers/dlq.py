"""Dead-letter publishing: the original bytes (or a v1 message rebuilt from the ledger) plus the
reason and the source coordinates in headers. Used by the bridge (rejects), the workers (jobs
that failed) and the reaper (jobs lost too often)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaProducer

from agentq import metrics
from agentq.config import KafkaSettings
from agentq.log import get_logger
from producers.contract import JobMessage
from producers.jsonsafe import printable

log = get_logger("agentq.dlq")

# The longest a sender spends on one call of ``dead_letter``: its producer connecting, a send
# blocked on metadata (``max_block_ms``), the acks (``ACK_WAIT_S`` in all). The reaper re-sends
# an unacknowledged copy only after this much more has passed (``storage.recovery``), so a slow
# sender and the reaper do not both send one.
ACK_WAIT_S = 10.0
SEND_WINDOW_S = 30.0

REPLAY_HEADER = "agentq-replay-of"  # set by `agentq dlq replay`: the DLQ record re-submitted


def dlq_headers(reason: str, detail: str, topic: str | None, partition: int | None,
                offset: int | None, job_id: str | None = None) -> list[tuple[str, bytes]]:
    h = [("reason", reason.encode()), ("detail", printable(detail, 1000).encode())]
    if topic is not None:
        h += [("source_topic", topic.encode()), ("source_partition", str(partition).encode()),
              ("source_offset", str(offset).encode())]
    if job_id:
        h.append(("job_id", job_id.encode()))
    return h


class DeadLetters:
    """A producer for the DLQ topic; ``send`` returns a future, ``flush`` waits for acks."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = settings.dlq_topic
        # A send waits at most 10 s for metadata, so an unreachable broker fails the send (the
        # caller sends again) instead of blocking its thread for a minute.
        self.producer = KafkaProducer(acks="all", linger_ms=5, retries=5,
                                      max_request_size=2 * 1024 * 1024, max_block_ms=10_000,
                                      **settings.client_options())

    def send(self, value: bytes | None, reason: str, detail: str, *, topic: str | None = None,
             partition: int | None = None, offset: int | None = None,
             job_id: str | None = None, key: bytes | None = None,
             extra_headers: list[tuple[str, bytes]] | None = None) -> Any:
        headers = dlq_headers(reason, detail, topic, partition, offset, job_id)
        future = self.producer.send(self.topic, value=value or b"", key=key,
                                    headers=headers + (extra_headers or []))
        metrics.dlq_sent(reason)
        return future

    def flush(self, timeout_s: float = 30.0) -> None:
        self.producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self.producer.close(timeout=5)


def dlq_value(row: Mapping[str, Any]) -> bytes:
    """A job message v1 rebuilt from a ledger row (priority, deadline, tenant and meta kept), so
    the DLQ copy can be replayed as it was sent."""
    deadline = row.get("deadline_at")
    return JobMessage(job_id=str(row["job_id"]), model=row["model"], input=row.get("input") or {},
                      priority=int(row.get("priority") or 0),
                      deadline_ms=int(deadline.timestamp() * 1000) if deadline else None,
                      tenant=row.get("tenant"), meta=row.get("meta"),
                      reply_to=row.get("reply_to")).encode()


def dead_letter(dlq: Any, rows: Sequence[Mapping[str, Any]], timeout_s: float = ACK_WAIT_S
                ) -> list[str]:
    """Send a DLQ copy of each failed ledger row; returns the job_ids the DLQ acknowledged.
    A copy that fails is not lost: its row keeps ``dlq_at`` empty and the reaper sends it again
    (``storage.ledger.owed_dead_letters``)."""
    if not rows or dlq is None:
        return []
    acked: list[str] = []
    try:
        futures = [(str(r["job_id"]), dlq.send(
            dlq_value(r), r.get("reason") or "FAILED", r.get("error") or "",
            topic=r.get("source_topic"), partition=r.get("source_partition"),
            offset=r.get("source_offset"), job_id=str(r["job_id"]))) for r in rows]
        deadline = time.monotonic() + timeout_s  # for all the acks, not for each
        for job_id, f in futures:
            f.get(timeout=max(0.0, deadline - time.monotonic()))
            acked.append(job_id)
    except Exception as e:  # the reaper sends the rest again; the ledger says failed
        log.warning("dlq_copy_deferred", jobs=len(rows) - len(acked), error=str(e)[:200])
    if acked:
        log.info("jobs_dead_lettered", count=len(acked),
                 reasons=sorted({str(r.get("reason")) for r in rows}))
    return acked


def dead_letter_and_mark(db: Any, dlq: Any, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``dead_letter`` and record the acknowledged copies in the ledger (``dlq_at``)."""
    acked = dead_letter(dlq, rows)
    if acked:
        from storage.db import transaction
        from storage.errors import StorageError
        from storage.recovery import mark_dead_lettered

        try:
            with transaction(db) as conn:
                mark_dead_lettered(conn, acked)
        except StorageError as e:  # sent again later: a duplicate copy, never a lost one
            log.warning("dlq_mark_failed", jobs=len(acked), error=str(e)[:200])
    return acked
