"""Celery conventions without a broker: task events in the config, the queue/prefix check, and
what `celery inspect agentq` reports."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from agentq.config import Settings, WorkerSettings
from agentq.log import configure_logging
from workers import control
from workers.app import celery_config


def test_task_events_are_on_by_default_and_can_be_turned_off():
    on = celery_config(Settings.from_env({}))
    assert on["worker_send_task_events"] is True and on["task_send_sent_event"] is True
    off = celery_config(Settings.from_env({"AGENTQ_TASK_EVENTS": "0"}))
    assert off["worker_send_task_events"] is False and off["task_send_sent_event"] is False


@pytest.mark.parametrize("consumed, prefix, unknown", [
    (["cpu"], "", []),
    (["cpu", "gpu"], "", []),
    (["cpu"], "prod.", ["cpu"]),          # -Q cpu with a prefix: consumes nothing of ours
    (["prod.cpu", "celery"], "prod.", ["celery"]),
    (["prod.gpu"], "prod.", []),
])
def test_unconfigured_queues(consumed, prefix, unknown):
    assert control.unconfigured_queues(consumed, prefix) == unknown


@pytest.fixture
def log_lines(monkeypatch):
    import io

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO", True)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line]
    structlog.reset_defaults()


def test_mismatched_queues_warn_with_the_queue_to_use(log_lines):
    assert control.check_queues(["cpu"], "prod.") == ["cpu"]
    (doc,) = log_lines()
    assert doc["event"] == "worker_queues_not_configured" and doc["level"] == "warning"
    assert doc["hint"] == "start the worker with -Q prod.cpu"
    assert doc["runs_agentq_batches"] is False


def test_matching_queues_say_nothing(log_lines):
    assert control.check_queues(["prod.cpu", "prod.gpu"], "prod.") == []
    assert log_lines() == []


def test_worker_info_lists_models_on_disk_and_queues(tmp_path: Path):
    (tmp_path / "digits-mlp" / "abc123").mkdir(parents=True)
    (tmp_path / "digits-mlp" / "abc123" / "manifest.json").write_text("{}")
    (tmp_path / "digits-mlp" / "half-built").mkdir()
    s = replace(Settings(), worker=WorkerSettings(models_dir=tmp_path), queue_prefix="x.")
    info = control.worker_info(s, ["x.cpu", "cpu"])
    assert info["models"] == {"digits-mlp": ["abc123"]}
    assert info["expected_queues"] == ["x.cpu", "x.gpu"]
    assert info["unconfigured_queues"] == ["cpu"]
    json.dumps(info)  # what the remote-control reply carries must be JSON


def test_inspect_command_is_registered():
    from celery.worker.control import Panel

    assert Panel.meta["agentq"].type == "inspect"
