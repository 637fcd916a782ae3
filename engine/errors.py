"""Errors raised by the workers package."""


class WorkerError(Exception):
    """Root of every error raised by agentq workers and the bridge."""


class RetryableError(WorkerError):
    """A transient failure (a service is down); the batch is retried later."""


class FatalError(WorkerError):
    """A failure that retrying will not fix (a bad model, a bad input)."""


class EngineUnavailable(RetryableError):
    """The inference engine cannot serve the model right now."""
