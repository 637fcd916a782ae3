"""Rejected records: a ledger row each (``rejected`` or ``expired``, with the reason) and a copy
on the DLQ topic, both durable before the records count as done.

The DLQ cannot wedge the bridge: a send that fails is sent again (a new send, with backoff)
until ``dlq_timeout_s``; a copy over ``dlq_max_value_bytes`` (or one the broker refuses as too
large) is truncated, with a ``truncated`` header giving the original size; when the DLQ stays
unreachable past the bound, ``DeadLetterUnavailable`` stops the bridge (it exits non-zero, its
supervisor restarts it, and no offset is committed past the undelivered record).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from kafka.errors import MessageSizeTooLargeError

from agentq.config import Settings
from agentq.log import get_logger
from bridge.isolate import write_isolating
from bridge.records import Reject, ts
from producers.contract import RejectReason
from producers.jsonsafe import printable
from storage.schema import JobStatus

log = get_logger("agentq.bridge")


class DeadLetterUnavailable(RuntimeError):
    """The DLQ topic took no copy within the bound: the bridge must stop, not skip it."""


def reject_row(r: Reject, finished: datetime, reply_to: str | None) -> dict[str, Any]:
    return {
        "job_id": r.ledger_id, "model": printable(r.model or "?", 200),
        "status": (JobStatus.EXPIRED if r.rejection.reason == RejectReason.EXPIRED
                   else JobStatus.REJECTED),
        "reason": r.rejection.reason.value, "error": printable(r.rejection.detail),
        "source_topic": r.topic, "source_partition": r.partition, "source_offset": r.offset,
        "produced_at": ts(r.produced_ms), "received_at": ts(r.received_ms),
        "finished_at": finished, "reply_to": reply_to,
    }


class RejectWriter:
    def __init__(self, settings: Settings, dlq: Any,
                 write_rows: Callable[[Sequence[dict[str, Any]]], set[str]],
                 reply_topic: Callable[[str | None], str | None] = lambda asked: asked) -> None:
        self.dlq = dlq
        self.reply_topic = reply_topic  # the job's reply topic, or the default results topic
        self.write_rows = write_rows  # one transaction; transient errors retried by the caller
        self.timeout_s = settings.bridge.dlq_timeout_s
        self.max_bytes = settings.bridge.dlq_max_value_bytes

    def write(self, rejects: list[Reject]) -> None:
        """Ledger rows and DLQ copies of ``rejects``, durable when this returns."""
        pending = {i: self._send(r, self.max_bytes) for i, r in enumerate(rejects)}
        now = datetime.now(UTC)
        rows = [reject_row(r, now, None if r.rejection.fields.get("keyed_by_record")
                           else self.reply_topic(r.rejection.reply_to)) for r in rejects]
        _, refused = write_isolating(self.write_rows, rows)
        for row, why in refused:  # our own row refused: keep a minimal one, never lose it
            self.write_rows([{**{k: row[k] for k in ("job_id", "model", "status", "reason",
                                                     "source_topic", "source_partition",
                                                     "source_offset", "finished_at")},
                              "model": "?", "error": printable(f"ledger refused: {why}")}])
        self._await(rejects, pending)

    def _send(self, r: Reject, limit: int) -> Any:
        value = r.value or b""
        extra: list[tuple[str, bytes]] = []
        if len(value) > limit:
            extra = [("truncated", str(len(value)).encode())]
            value = value[:limit]
        try:
            return self.dlq.send(value, r.rejection.reason.value, printable(r.rejection.detail),
                                 topic=r.topic, partition=r.partition, offset=r.offset,
                                 job_id=r.rejection.job_id, key=r.key, extra_headers=extra)
        except MessageSizeTooLargeError:
            return self._send(r, max(1024, min(limit, len(value)) // 4))
        except Exception as e:  # broker unreachable at send time: retried in _await
            return e

    def _await(self, rejects: list[Reject], pending: dict[int, Any]) -> None:
        deadline = time.monotonic() + self.timeout_s
        delay = 0.2
        limits = dict.fromkeys(pending, self.max_bytes)
        while pending:
            failed: dict[int, BaseException] = {}
            for i, fut in pending.items():
                if isinstance(fut, BaseException):
                    failed[i] = fut
                    continue
                try:
                    fut.get(timeout=max(1.0, min(30.0, deadline - time.monotonic())))
                except Exception as e:  # resent below with a new send
                    failed[i] = e
            if not failed:
                return
            if time.monotonic() >= deadline:
                raise DeadLetterUnavailable(
                    f"the DLQ took no copy of {len(failed)} rejected record(s) within "
                    f"{self.timeout_s:.0f}s (last error: {next(iter(failed.values()))!r}); "
                    "stopping so that no offset is committed past them")
            log.warning("dlq_send_retrying", records=len(failed), delay_s=round(delay, 2),
                        error=str(next(iter(failed.values())))[:200])
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            for i, err in failed.items():
                if isinstance(err, MessageSizeTooLargeError):
                    limits[i] = max(1024, limits[i] // 4)
            pending = {i: self._send(rejects[i], limits[i]) for i in failed}
