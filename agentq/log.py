"""Logging: key-value lines for people, JSON lines for machines, for our events and every
library's (the standard library's records go through structlog's formatter). Secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from agentq.config import redact

_SECRET_KEYS = ("password", "secret", "token", "api_key")


def _redact_value(key: str, value: Any, depth: int = 0) -> Any:
    """Hide secrets by key name and inside URLs, also in nested dicts and lists."""
    if any(k in key.lower() for k in _SECRET_KEYS) and value:
        return "***"
    if isinstance(value, str):
        return redact(value) if "://" in value else value
    if depth < 4 and isinstance(value, dict):
        return {k: _redact_value(str(k), v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple):
        return [_redact_value(key, v, depth + 1) for v in value]
    return value


def _redact_processor(_logger: Any, _name: str,
                      event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key == "event":  # a library's message may carry a URL with its password
            if isinstance(value, str) and "://" in value:
                event[key] = redact(value)
        elif not key.startswith("_"):  # _record, _from_structlog: the formatter's own
            event[key] = _redact_value(key, value)
    return event


_HANDLER_MARK = "_agentq_handler"
# Third-party loggers that are chatty at INFO; their warnings and errors still come through.
QUIET_LOGGERS = ("kafka",)


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    """Configure structlog and the standard library's logging once per process (idempotent).

    Every line goes through one stdlib handler whose ``structlog.stdlib.ProcessorFormatter``
    renders it: agentq's own structlog events and the standard library's records from Celery,
    kafka-python, SQLAlchemy or alembic alike, each with ``level``, ``logger`` and ``timestamp``,
    redacted the same way. ``json=None`` (``AGENTQ_LOG_JSON`` unset) picks by where stderr goes:
    JSON lines when it is not a TTY (files, pipes, containers, log shippers), key-value lines on
    a terminal.
    """
    stream = _real_stderr()
    if json is None:
        json = not _isatty(stream)
    lvl = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,  # no ExtraAdder: Celery passes whole task args as `extra`
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if json else []),
            renderer,
        ],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    logging.captureWarnings(True)  # warnings.warn (Celery's SecurityWarning...) as log records
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, lvl))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def _real_stderr() -> Any:
    """stderr, unless Celery replaced it with its logging proxy (``worker_redirect_stdouts``):
    a handler writing there would feed its own lines back into logging."""
    if type(sys.stderr).__name__ == "LoggingProxy" and sys.__stderr__ is not None:
        return sys.__stderr__
    return sys.stderr


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
