"""Result events v1: what a terminal job sends to its reply topic (DESIGN §3 ``reply_to``,
invariant 9), and :class:`JobResult`, the same event as a client reads it.

One JSON object per Kafka record, keyed by job_id::

    {"v": 1, "job_id": str, "status": "succeeded|failed|rejected|expired",
     "reason": str | null, "error": str | null, "model": str, "tenant": str | null,
     "meta": object | null, "attempts": int,
     "result": {"embedding": [...]} | {"label": int, "probs": [...]} | null  (+ "extra"),
     "timestamps_ms": {"produced", "received", "queued", "started", "finished": epoch ms | null}}

The event is built from the ledger row alone (``reply_event``), and a terminal row never
changes, so every copy of one job's event carries the same content: a client may receive a
reply twice (at least once) and keeps the first. ``agentq result`` prints the same object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from producers.errors import JobFailed

REPLY_VERSION = 1
TIMESTAMPS = ("produced", "received", "queued", "started", "finished")
RESULT_FIELDS = ("embedding", "label", "probs", "extra")
TERMINAL = ("succeeded", "failed", "rejected", "expired")


def _ms(value: datetime | None) -> float | None:
    return None if value is None else round(value.timestamp() * 1000, 3)


def reply_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event of a terminal ledger row (``storage.replies.JOB_COLUMNS``)."""
    result = None
    if row["status"] == "succeeded":
        result = {k: row[k] for k in RESULT_FIELDS if row.get(k) is not None}
    return {
        "v": REPLY_VERSION, "job_id": str(row["job_id"]), "status": row["status"],
        "reason": row.get("reason"), "error": row.get("error"), "model": row["model"],
        "tenant": row.get("tenant"), "meta": row.get("meta"),
        "attempts": int(row.get("attempts") or 0), "result": result,
        "timestamps_ms": {k: _ms(row.get(f"{k}_at")) for k in TIMESTAMPS},
    }


def encode_event(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class JobResult:
    """A job's terminal outcome, as its reply event carries it."""

    job_id: str
    status: str
    model: str
    reason: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    attempts: int = 0
    tenant: str | None = None
    meta: dict[str, Any] | None = None
    timestamps_ms: dict[str, float | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def embedding(self) -> list[float] | None:
        return (self.result or {}).get("embedding")

    @property
    def label(self) -> int | None:
        return (self.result or {}).get("label")

    @property
    def probs(self) -> list[float] | None:
        return (self.result or {}).get("probs")

    def raise_for_status(self) -> JobResult:
        """This result when the job succeeded, else :class:`JobFailed` with its reason."""
        if not self.ok:
            raise JobFailed(self)
        return self

    def to_event(self) -> dict[str, Any]:
        return {"v": REPLY_VERSION, "job_id": self.job_id, "status": self.status,
                "reason": self.reason, "error": self.error, "model": self.model,
                "tenant": self.tenant, "meta": self.meta, "attempts": self.attempts,
                "result": self.result, "timestamps_ms": dict(self.timestamps_ms)}

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> JobResult:
        return cls(job_id=str(event["job_id"]), status=str(event["status"]),
                   model=str(event.get("model") or "?"), reason=event.get("reason"),
                   error=event.get("error"), result=event.get("result"),
                   attempts=int(event.get("attempts") or 0), tenant=event.get("tenant"),
                   meta=event.get("meta"), timestamps_ms=dict(event.get("timestamps_ms") or {}))

    @classmethod
    def decode(cls, value: bytes) -> JobResult:
        return cls.from_event(json.loads(value))
