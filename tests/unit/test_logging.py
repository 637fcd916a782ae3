"""Log format: JSON lines off a TTY, key-value lines on one, unless AGENTQ_LOG_JSON is set."""

import io
import json
import sys

import pytest
import structlog

from agentq.config import Settings
from agentq.log import configure_logging, get_logger


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture
def stderr(monkeypatch):
    """Point sys.stderr at a stream that is (or is not) a TTY; reset structlog afterwards."""

    def use(tty: bool) -> _Stream:
        stream = _Stream(tty)
        monkeypatch.setattr(sys, "stderr", stream)
        return stream

    yield use
    structlog.reset_defaults()


def _emit() -> None:
    get_logger("agentq.test").info("batch_done", jobs=64, queue="cpu", ok=True)


def _lines(stream: _Stream) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("tty, json_flag", [(False, None), (True, True), (False, True)])
def test_json_lines_parse_and_carry_event_and_values(stderr, tty, json_flag):
    stream = stderr(tty)
    configure_logging("INFO", json_flag)
    _emit()
    (line,) = _lines(stream)
    doc = json.loads(line)
    assert doc["event"] == "batch_done"
    assert doc["jobs"] == 64 and doc["queue"] == "cpu" and doc["ok"] is True
    assert doc["level"] == "info"
    assert "timestamp" in doc


@pytest.mark.parametrize("tty, json_flag", [(True, None), (False, False), (True, False)])
def test_key_value_lines_for_people(stderr, tty, json_flag):
    stream = stderr(tty)
    configure_logging("INFO", json_flag)
    _emit()
    (line,) = _lines(stream)
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert "batch_done" in line
    for kv in ("jobs=64", "queue=cpu", "ok=True"):
        assert kv in line


def test_level_filters(stderr):
    stream = stderr(False)
    configure_logging("WARNING", None)
    get_logger("agentq.test").info("quiet")
    get_logger("agentq.test").warning("loud", n=1)
    assert [json.loads(line)["event"] for line in _lines(stream)] == ["loud"]


@pytest.mark.parametrize("raw, expected", [
    (None, None), ("", None), ("1", True), ("true", True), ("YES", True),
    ("0", False), ("false", False), ("no", False),
])
def test_log_json_setting_is_auto_unless_set(raw, expected):
    env = {} if raw is None else {"AGENTQ_LOG_JSON": raw}
    assert Settings.from_env(env).log_json is expected
