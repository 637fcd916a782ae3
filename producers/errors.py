"""Errors raised by the producers package."""


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
