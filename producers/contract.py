"""Job message v1: the wire contract between any Kafka producer and the bridge (DESIGN §3).

Limits are checked before parsing: record bytes, UTF-8, JSON nesting depth; then the schema and
the model-specific input. Every rejection carries a machine-readable reason.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from agentq.config import Limits
from models.catalog import CATALOG
from producers.jsonsafe import printable, problem, text_problem

SCHEMA_VERSION = 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1  # jobs.priority is a PostgreSQL integer
# deadline_ms: epoch ms that Python and PostgreSQL both hold (1970 .. 9999-12-31).
DEADLINE_MAX_MS = 253_402_300_799_999


class RejectReason(StrEnum):
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    NOT_UTF8 = "NOT_UTF8"
    TOO_DEEP = "TOO_DEEP"
    MALFORMED_JSON = "MALFORMED_JSON"
    SCHEMA = "SCHEMA"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    EXPIRED = "EXPIRED"
    INFERENCE_FAILED = "INFERENCE_FAILED"
    WORKER_CRASHED = "WORKER_CRASHED"
    STORAGE_REFUSED = "STORAGE_REFUSED"  # the ledger refused the job (defence in depth)
    DUPLICATE_JOB_ID = "DUPLICATE_JOB_ID"  # a job_id already used for other content
    INVALID_REPLY_TO = "INVALID_REPLY_TO"


# Kafka's own rule for topic names (``org.apache.kafka.common.internals.Topic``).
TOPIC_CHARS = re.compile(r"[a-zA-Z0-9._-]+")
# The canonical form ``str(uuid.UUID(x))`` returns: such a job_id is kept as it is without parsing
# it (a sixth of the time, on every record at the edge and every send).
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_TOPIC_CHARS = 249


def topic_problem(name: Any, prefixes: Sequence[str] = ()) -> str | None:
    """Why ``name`` cannot be a reply topic (legal Kafka name, allowed prefix), or None."""
    if not isinstance(name, str) or not name:
        return "reply_to must be a non-empty string"
    if len(name) > MAX_TOPIC_CHARS:
        return f"reply_to is {len(name)} characters, limit {MAX_TOPIC_CHARS}"
    if name in (".", "..") or not TOPIC_CHARS.fullmatch(name):
        return "reply_to must be a Kafka topic name: ASCII letters, digits, '.', '_', '-'"
    if prefixes and not name.startswith(tuple(prefixes)):
        return f"reply_to must start with one of {', '.join(prefixes)}"
    return None


@dataclass(frozen=True)
class JobMessage:
    job_id: str
    model: str
    input: dict[str, Any]
    v: int = SCHEMA_VERSION
    priority: int = 0
    deadline_ms: int | None = None
    tenant: str | None = None
    meta: dict[str, Any] | None = None
    reply_to: str | None = None  # topic for the job's result event (``producers.replies``)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": self.v, "job_id": self.job_id, "model": self.model,
                             "input": self.input}
        if self.priority:
            d["priority"] = self.priority
        if self.deadline_ms is not None:
            d["deadline_ms"] = self.deadline_ms
        if self.tenant is not None:
            d["tenant"] = self.tenant
        if self.meta is not None:
            d["meta"] = self.meta
        if self.reply_to is not None:
            d["reply_to"] = self.reply_to
        return d

    def encode(self) -> bytes:
        """The record value: UTF-8 JSON (NaN and Infinity refused, as the bridge would)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode()

    @staticmethod
    def new(model: str, input: dict[str, Any], **kw: Any) -> JobMessage:
        return JobMessage(job_id=str(uuid.uuid4()), model=model, input=input, **kw)


@dataclass(frozen=True)
class Rejection:
    reason: RejectReason
    detail: str
    job_id: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None  # the job's valid reply topic, when it was read before the refusal


def json_depth_exceeds(raw: str, max_depth: int) -> bool:
    """True when the JSON text nests objects/arrays deeper than ``max_depth``, without parsing."""
    if raw.count("{") + raw.count("[") <= max_depth:
        return False
    depth = 0
    in_str = False
    esc = False
    for ch in raw:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
            if depth > max_depth:
                return True
        elif ch in "}]":
            depth -= 1
    return False


# msgspec's C decoder reads a digits record in a fraction of json.loads's time (the same values:
# both read strict JSON into dicts, lists, str, int, float); it refuses what strict JSON does not
# have, which then goes through json.loads for today's reason texts.
_DECODE = msgspec.json.Decoder().decode


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number agentq accepts")


def parse_record(value: bytes | None, limits: Limits, known_models: set[str] | None = None,
                 now_ms: int | None = None) -> JobMessage | Rejection:
    """Validate one Kafka record value: size, UTF-8, depth, JSON, schema, model, input, deadline.

    Whatever the bytes, this returns: anything unexpected is a rejection with its reason, never an
    exception that would stop the bridge."""
    try:
        return _parse_record(value, limits, known_models, now_ms)
    except Exception as e:  # defence in depth: a record must never raise out of the edge
        return Rejection(RejectReason.SCHEMA, printable(f"record could not be validated: {e!r}"))


def _parse_record(value: bytes | None, limits: Limits, known_models: set[str] | None,
                  now_ms: int | None) -> JobMessage | Rejection:
    if value is None:
        return Rejection(RejectReason.MALFORMED_JSON, "record has no value (tombstone)")
    if len(value) > limits.max_record_bytes:
        return Rejection(RejectReason.PAYLOAD_TOO_LARGE,
                         f"record is {len(value)} bytes, limit {limits.max_record_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejection(RejectReason.NOT_UTF8, f"record is not UTF-8: {e.reason} at {e.start}")
    if json_depth_exceeds(text, limits.max_json_depth):
        return Rejection(RejectReason.TOO_DEEP, f"JSON nests deeper than {limits.max_json_depth}")
    try:
        obj = _DECODE(value)
    except msgspec.DecodeError:
        # What msgspec refuses, json may still read (1e400, a lone surrogate escape: the checks
        # below refuse those with their own reason) or refuse with the reason it always gave.
        try:
            obj = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as e:
            return Rejection(RejectReason.MALFORMED_JSON, printable(f"invalid JSON: {e}"))
    return validate_message(obj, limits, known_models, now_ms)


def _schema(detail: str, job_id: str | None = None, reply_to: str | None = None) -> Rejection:
    return Rejection(RejectReason.SCHEMA, detail, job_id, reply_to=reply_to)


def validate_message(obj: Any, limits: Limits, known_models: set[str] | None = None,
                     now_ms: int | None = None) -> JobMessage | Rejection:
    if not isinstance(obj, dict):
        return _schema("message must be a JSON object")
    job_id = obj.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        return _schema("job_id is required and must be a string")
    if not CANONICAL_UUID.fullmatch(job_id):
        try:
            job_id = str(uuid.UUID(job_id))
        except ValueError:
            return _schema("job_id must be a UUID", None)
    version = obj.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        return _schema(printable(f"unsupported schema version {version!r}; expected 1", 200),
                       job_id)
    reply_to = obj.get("reply_to")
    if reply_to is not None:
        problem_text = topic_problem(reply_to, limits.reply_prefixes())
        if problem_text is not None:
            return Rejection(RejectReason.INVALID_REPLY_TO, problem_text, job_id)
    # From here on a refusal still replies to the job's reply topic.
    model = obj.get("model")
    if not isinstance(model, str):
        return _schema("model is required and must be a string", job_id, reply_to)
    entry = CATALOG.get(model)
    if entry is None or (known_models is not None and model not in known_models):
        return Rejection(RejectReason.UNKNOWN_MODEL, printable(f"unknown model {model!r}", 300),
                         job_id, reply_to=reply_to)
    inp = obj.get("input")
    if not isinstance(inp, dict):
        return _schema("input is required and must be an object", job_id, reply_to)
    refused = entry.check_input(inp, limits)
    if refused is not None:
        return Rejection(RejectReason(refused[0]), refused[1], job_id, reply_to=reply_to)
    bad = problem(inp, "input")
    if bad:
        return _schema(bad, job_id, reply_to)
    priority = obj.get("priority", 0)
    deadline = obj.get("deadline_ms")
    tenant = obj.get("tenant")
    meta = obj.get("meta")
    if type(priority) is not int or not INT32_MIN <= priority <= INT32_MAX:
        return _schema("priority must be an integer in the 32-bit range", job_id, reply_to)
    if deadline is not None and (type(deadline) is not int
                                 or not 0 <= deadline <= DEADLINE_MAX_MS):
        return _schema("deadline_ms must be an integer epoch ms between 1970 and 9999", job_id,
                       reply_to)
    if tenant is not None and (not isinstance(tenant, str) or len(tenant) > 128
                               or text_problem(tenant)):
        return _schema("tenant must be a string of at most 128 characters, without NUL or "
                       "unpaired surrogates", job_id, reply_to)
    if meta is not None and not isinstance(meta, dict):
        return _schema("meta must be an object", job_id, reply_to)
    bad = problem(meta, "meta") if meta else None
    if bad:
        return _schema(bad, job_id, reply_to)
    if deadline is not None and now_ms is not None and deadline < now_ms:
        return Rejection(RejectReason.EXPIRED, f"deadline {deadline} passed before receipt", job_id,
                         reply_to=reply_to)
    return JobMessage(job_id=job_id, model=model, input=inp, priority=priority,
                      deadline_ms=deadline, tenant=tenant, meta=meta, reply_to=reply_to)
