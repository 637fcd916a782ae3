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


# Each library's own records, from a real call into it, in a fresh process logging JSON.
_LIBRARY_CALLS = {
    "celery": """
from celery import Celery
app = Celery("t", set_as_current=False)
app.conf.task_always_eager = True
@app.task
def add(x, y):
    return x + y
add.apply((1, 2))
""",
    "kafka": """
from kafka import KafkaProducer
# Nothing listens on the discard port: kafka-python logs its connection errors.
p = KafkaProducer(bootstrap_servers="127.0.0.1:9", api_version=(2, 5), max_block_ms=500)
try:
    p.send("t", b"x")
except Exception:
    pass
p.close(timeout=0.5)
""",
    "sqlalchemy": """
import logging
from sqlalchemy import create_engine, text
logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
with create_engine("sqlite://").connect() as c:
    c.execute(text("SELECT 1"))
""",
    "alembic": """
from sqlalchemy import create_engine
from alembic.runtime.migration import MigrationContext
with create_engine("sqlite://").connect() as c:
    MigrationContext.configure(c)
""",
}


@pytest.mark.parametrize("library", sorted(_LIBRARY_CALLS))
def test_every_library_line_is_json_with_level_logger_and_timestamp(library):
    import subprocess

    code = ("from agentq.log import configure_logging\n"
            "configure_logging('INFO', None)\n" + _LIBRARY_CALLS[library])
    env = {**__import__("os").environ, "AGENTQ_LOG_JSON": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    docs = []
    for line in lines:
        doc = json.loads(line)  # every line, not only the library's
        assert {"event", "level", "logger", "timestamp"} <= doc.keys(), doc
        docs.append(doc)
    assert any(d["logger"].split(".")[0] == library for d in docs), lines


def test_library_exceptions_carry_the_traceback_as_a_field(stderr):
    import logging

    stream = stderr(False)
    configure_logging("INFO", True)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("celery.worker").exception("task_crashed")
    (doc,) = [json.loads(line) for line in _lines(stream)]
    assert doc["logger"] == "celery.worker" and doc["level"] == "error"
    assert "ValueError: boom" in doc["exception"]


def test_library_records_are_redacted_like_ours(stderr):
    import logging

    stream = stderr(False)
    configure_logging("INFO", True)
    logging.getLogger("kombu").warning("connecting to redis://:s3cret@redis:6379/0")
    get_logger("agentq.test").info("url", url="redis://:s3cret@redis:6379/0")
    text = stream.getvalue()
    assert "s3cret" not in text and text.count("***") == 2
