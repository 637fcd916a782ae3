"""Errors raised by the producers package."""

from __future__ import annotations

from typing import Any


class ProducerError(Exception):
    """Root of every error raised by agentq producers."""


class Backpressure(ProducerError):
    """The backlog is over the admission limit; retry later or slow down."""

    def __init__(self, backlog_s: float, limit_s: float) -> None:
        super().__init__(f"backlog {backlog_s:.1f}s is over the admission limit {limit_s:.1f}s")
        self.backlog_s = backlog_s
        self.limit_s = limit_s


class InvalidJob(ProducerError):
    """A job refused before it was sent (it would be rejected by the bridge)."""


class JobFailed(ProducerError):
    """A job ended failed, rejected or expired (``JobResult.raise_for_status``)."""

    def __init__(self, result: Any) -> None:
        super().__init__(f"job {result.job_id} ended {result.status}"
                         f" ({result.reason or 'no reason'}): {result.error or ''}".rstrip(": "))
        self.result = result


class ReplyTimeout(ProducerError):
    """No reply arrived in time; ``ledger_status`` says what the ledger knows (or None)."""

    def __init__(self, job_id: str, timeout_s: float, ledger: str,
                 ledger_status: str | None = None) -> None:
        super().__init__(f"no reply for job {job_id} after {timeout_s:g}s; {ledger}")
        self.job_id = job_id
        self.ledger_status = ledger_status


class ClientFull(ProducerError):
    """The client already holds its most outstanding handles; wait for some first."""


class ClientClosed(ProducerError):
    """The client was closed before the job's reply arrived."""


class SubmitFailed(ProducerError):
    """Kafka did not accept the job record (it was never submitted)."""
