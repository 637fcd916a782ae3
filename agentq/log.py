"""structlog set-up: key-value lines for people, JSON lines for machines. Secrets are redacted."""

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
        if key != "event":
            event[key] = _redact_value(key, value)
    return event


def configure_logging(level: str = "INFO", json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process.

    ``json=None`` (``AGENTQ_LOG_JSON`` unset) picks by where stderr goes: JSON lines when it is not
    a TTY (files, pipes, containers, log shippers), key-value lines on a terminal.
    """
    if json is None:
        json = not _isatty(sys.stderr)
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    for noisy in ("kafka", "celery.redirected"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
