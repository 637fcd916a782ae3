"""Dead-letter publishing: the original bytes (or a v1 message rebuilt from the ledger) plus the
reason and the source coordinates in headers. Used by the bridge (rejects), the workers (jobs
that failed) and the reaper (jobs lost too often)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaProducer

from agentq import metrics
from agentq.config import KafkaSettings
from agentq.log import get_logger
from producers.contract import JobMessage

log = get_logger("agentq.dlq")


def dlq_headers(reason: str, detail: str, topic: str | None, partition: int | None,
                offset: int | None, job_id: str | None = None) -> list[tuple[str, bytes]]:
    h = [("reason", reason.encode()), ("detail", detail[:1000].encode())]
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
        self.producer = KafkaProducer(acks="all", linger_ms=5, retries=5,
                                      max_request_size=2 * 1024 * 1024,
                                      **settings.client_options())

    def send(self, value: bytes | None, reason: str, detail: str, *, topic: str | None = None,
             partition: int | None = None, offset: int | None = None,
             job_id: str | None = None, key: bytes | None = None) -> Any:
        future = self.producer.send(self.topic, value=value or b"", key=key,
                                    headers=dlq_headers(reason, detail, topic, partition, offset,
                                                        job_id))
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
                      tenant=row.get("tenant"), meta=row.get("meta")).encode()


def dead_letter(dlq: Any, rows: Sequence[Mapping[str, Any]], timeout_s: float = 10.0) -> int:
    """Send a DLQ copy of each failed ledger row; returns how many were acknowledged. A side
    concern: when Kafka is unreachable it is logged and skipped (the ledger says failed)."""
    if not rows or dlq is None:
        return 0
    try:
        futures = [dlq.send(dlq_value(r), r.get("reason") or "FAILED", r.get("error") or "",
                            topic=r.get("source_topic"), partition=r.get("source_partition"),
                            offset=r.get("source_offset"), job_id=str(r["job_id"]))
                   for r in rows]
        for f in futures:
            f.get(timeout=timeout_s)
    except Exception as e:  # a side concern: the ledger already says failed
        log.warning("dlq_copy_failed", jobs=len(rows), error=str(e)[:200])
        return 0
    log.info("jobs_dead_lettered", count=len(rows),
             reasons=sorted({str(r.get("reason")) for r in rows}))
    return len(rows)
