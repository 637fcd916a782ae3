"""``JobBatch``: the one shape a batch of jobs has from the bridge to the ledger and the worker.

Columnar: one list per field, index ``i`` of every list is job ``i``. The bridge builds it from
validated messages, the worker runs it, retries and the reaper rebuild it from ledger rows, and
``to_payload`` is the only thing ever published to a Celery queue (JSON, one array per field)::

    {"v": 1, "batch_id": str, "model": str, "job_ids": [...], "inputs": [...],
     "deadlines_ms": [int | null, ...], "produced_ms": [int | null, ...]?, "sent_ms": int?}

Version 2 carries the inputs of a model with a ``packed_input`` as one float32 matrix instead
(``"packed": {...}`` in place of ``"inputs"``, ``workers.packed``); workers read both, so deploy
workers before bridges when upgrading.

Ledger-only columns (tenant, priority, meta, reply topic, Kafka coordinates, timestamps) ride
along for the ledger insert and are not published: the worker reads ids, inputs and deadlines,
plus two optional timing fields for the latency metrics only (``agentq.metrics``): each job's
produce time and when the batch was sent to Celery (set by ``workers.queues.publish``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from models.catalog import CATALOG
from workers.packed import PackedInputs

PAYLOAD_VERSION = 1
PACKED_VERSION = 2


# Epoch ms that Python's datetime and PostgreSQL's timestamptz both hold (1970 .. 9999).
MAX_EPOCH_MS = 253_402_300_799_999


def utc_from_ms(ms: float | None) -> datetime | None:
    """A UTC timestamp for epoch ms; None when absent or outside what both layers hold (a Kafka
    client may set any record timestamp)."""
    if ms is None or not 0 < ms <= MAX_EPOCH_MS:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)


_ts = utc_from_ms


@dataclass(frozen=True)
class JobBatch:
    batch_id: str
    model: str
    job_ids: list[str]
    inputs: list[dict[str, Any]]  # or PackedInputs (a payload that carried a matrix)
    deadlines_ms: list[int | None]
    # Ledger columns, by job (empty when rebuilt from a payload or the ledger).
    ledger: list[dict[str, Any]] = field(default_factory=list, compare=False)
    # Timing for the latency metrics: produce time by job (epoch ms, empty when unknown) and
    # when the batch was sent to Celery.
    produced_ms: list[float | None] = field(default_factory=list, compare=False)
    sent_ms: float | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.job_ids)

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def new(cls, model: str, batch_id: str | None = None) -> JobBatch:
        return cls(batch_id or str(uuid.uuid4()), model, [], [], [], [])

    def add(self, job: Any, *, topic: str, partition: int, offset: int,
            produced_ms: float | None, received_ms: float, replay: bool = False,
            reply_to: str | None = None) -> None:
        """Append one validated v1 message (``producers.contract.JobMessage``) from a record;
        ``reply_to`` is its reply topic once the bridge's default is applied, ``replay`` says
        the record was re-submitted from the DLQ."""
        self.job_ids.append(job.job_id)
        self.inputs.append(job.input)
        self.deadlines_ms.append(job.deadline_ms)
        self.produced_ms.append(produced_ms)
        self.ledger.append({
            "tenant": job.tenant, "priority": job.priority, "meta": job.meta,
            "source_topic": topic, "source_partition": partition, "source_offset": offset,
            "produced_at": _ts(produced_ms), "received_at": _ts(received_ms),
            "reply_to": reply_to, **({"replay": True} if replay else {})})

    def ledger_rows(self, queue: str, queued_ms: float) -> list[dict[str, Any]]:
        """The ``queued`` rows this batch inserts into ``jobs`` (``storage.ledger.queue_jobs``)."""
        queued_at = _ts(queued_ms)
        return [{"job_id": jid, "model": self.model, "input": inp, "queue": queue,
                 "batch_id": self.batch_id, "deadline_at": _ts(dl), "queued_at": queued_at,
                 **(self.ledger[i] if self.ledger else {})}
                for i, (jid, inp, dl) in enumerate(zip(self.job_ids, self.inputs,
                                                       self.deadlines_ms, strict=True))]

    # -- selecting -----------------------------------------------------------------------------
    def take(self, indexes: Iterable[int], batch_id: str | None = None) -> JobBatch:
        """The sub-batch of the jobs at ``indexes`` (in that order)."""
        idx = list(indexes)
        inputs: Any = (self.inputs.take(idx) if isinstance(self.inputs, PackedInputs)
                       else [self.inputs[i] for i in idx])
        return JobBatch(batch_id or self.batch_id, self.model, [self.job_ids[i] for i in idx],
                        inputs, [self.deadlines_ms[i] for i in idx],
                        [self.ledger[i] for i in idx] if self.ledger else [],
                        [self.produced_ms[i] for i in idx] if self.produced_ms else [],
                        self.sent_ms)

    def only(self, job_ids: Iterable[str], batch_id: str | None = None) -> JobBatch:
        """The sub-batch of the given job ids, in batch order."""
        keep = set(job_ids)
        return self.take((i for i, j in enumerate(self.job_ids) if j in keep), batch_id)

    def renamed(self, batch_id: str) -> JobBatch:
        return replace(self, batch_id=batch_id)

    # -- the Celery payload --------------------------------------------------------------------
    def packed(self) -> PackedInputs | None:
        """The inputs as one matrix, when the model packs them and they all fit."""
        if isinstance(self.inputs, PackedInputs):
            return self.inputs
        entry = CATALOG.get(self.model)
        field_name = entry.packed_input if entry is not None else None
        return PackedInputs.pack(field_name, self.inputs) if field_name else None

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": PAYLOAD_VERSION, "batch_id": self.batch_id,
                               "model": self.model, "job_ids": list(self.job_ids)}
        packed = self.packed()
        if packed is not None:
            out["v"], out["packed"] = PACKED_VERSION, packed.to_wire()
        else:
            out["inputs"] = list(self.inputs)
        out["deadlines_ms"] = list(self.deadlines_ms)
        if any(p is not None for p in self.produced_ms):
            out["produced_ms"] = [None if p is None else int(p) for p in self.produced_ms]
        return out

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> JobBatch:
        """The batch of a ``run_batch`` message; also reads the row-wise form of earlier releases
        (``{"jobs": [{"job_id", "input", "deadline_ms"?}]}``) so queued messages survive an
        upgrade."""
        if "jobs" in payload:
            jobs = payload["jobs"]
            return cls(str(payload["batch_id"]), str(payload["model"]),
                       [str(j["job_id"]) for j in jobs], [j["input"] for j in jobs],
                       [j.get("deadline_ms") for j in jobs])
        ids = [str(j) for j in payload["job_ids"]]
        inputs: Any = (PackedInputs.from_wire(payload["packed"], len(ids))
                       if "packed" in payload else list(payload["inputs"]))
        deadlines = list(payload.get("deadlines_ms") or [None] * len(ids))
        produced = list(payload.get("produced_ms") or [])
        if not len(ids) == len(inputs) == len(deadlines) or produced and len(produced) != len(ids):
            raise ValueError("job batch columns differ in length")
        sent = payload.get("sent_ms")
        return cls(str(payload["batch_id"]), str(payload["model"]), ids, inputs, deadlines, [],
                   produced, float(sent) if isinstance(sent, int | float) else None)

    @classmethod
    def from_ledger_rows(cls, model: str, rows: Sequence[Mapping[str, Any]],
                         batch_id: str | None = None) -> JobBatch:
        """Rebuild a batch from ``jobs`` rows (job_id, input, deadline_at): retries, the reaper."""
        return cls(batch_id or str(uuid.uuid4()), model, [str(r["job_id"]) for r in rows],
                   [r["input"] for r in rows],
                   [int(r["deadline_at"].timestamp() * 1000) if r.get("deadline_at") else None
                    for r in rows], [],
                   [r["produced_at"].timestamp() * 1000 if r.get("produced_at") else None
                    for r in rows])
