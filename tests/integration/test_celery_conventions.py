"""What a Celery user sees on live workers: task events (Flower, `celery events`), `celery
inspect`, a warning for queues that miss the prefix, and JSON log lines only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from producers.producer import JobProducer
from producers.synthetic import synthetic_jobs
from tests.support import REPO, wait_for, wait_terminal
from workers.app import make_celery

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


class _Events:
    """An events receiver (what Flower and `celery events` run) on a thread."""

    def __init__(self, app: Any) -> None:
        self.app, self.seen = app, []
        self.ready = threading.Event()
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.seen.append})
            on_ready = self.receiver.on_consume_ready

            def ready(*args: Any, **kwargs: Any) -> None:
                on_ready(*args, **kwargs)
                self.ready.set()

            self.receiver.on_consume_ready = ready
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> _Events:
        self.thread.start()
        assert self.ready.wait(20), "events receiver did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(10)

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in list(self.seen) if e.get("type") == kind
                and all(e.get(k) == v for k, v in match.items())]


def _celery(stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env}
    return subprocess.run([sys.executable, "-m", "celery", "-A", "workers.app", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def _inspect(stack: Any, command: str, node: str) -> dict[str, Any]:
    out = _celery(stack, "inspect", command, "-d", node, "--json", "--timeout", "5")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])[node]


def _log_lines(proc: Any) -> list[str]:
    return [line for line in proc.log().splitlines() if line.strip()]


def test_task_events_reach_an_events_receiver_and_inspect_reports_agentq(stack, worker_db):
    # Given an events receiver, and a worker and a bridge started with the default settings
    # (no -E flag: events are on in agentq's Celery config),
    s = stack.settings
    with _Events(make_celery(s)) as events:
        worker = stack.worker(concurrency=1)
        stack.bridge()
        # when digits jobs run through the pipeline,
        jobs = list(synthetic_jobs("digits-mlp", 40, seed=3))
        with JobProducer(s.kafka, s.limits) as producer:
            for job in jobs:
                producer.send(job)
            producer.flush()
        statuses = wait_terminal(worker_db, [j.job_id for j in jobs], timeout_s=120)
        assert set(statuses.values()) == {"succeeded"}, stack.logs()
        # then the receiver sees the bridge's task-sent and the worker's task-succeeded for
        # the same run_batch tasks,
        done = wait_for(lambda: events.of("task-succeeded", hostname=worker.hostname), 20,
                        what="task-succeeded events")
        sent = {e["uuid"]: e for e in events.of("task-sent", name="agentq.run_batch")}
        assert {e["uuid"] for e in done} <= set(sent), (done, sent)
        assert events.of("task-started", hostname=worker.hostname)
    # and `celery inspect` answers for the worker: ping, and agentq's own stats,
    assert _inspect(stack, "ping", worker.hostname) == {"ok": "pong"}
    info = _inspect(stack, "agentq", worker.hostname)
    assert info["queues"] == [s.queue_prefix + "cpu"] and info["unconfigured_queues"] == []
    assert info["tasks_total"].get("agentq.run_batch", 0) >= len(done)
    assert "digits-mlp" in info["models"] and info["task_events"] is True
    # and every line the worker logged is a JSON record.
    lines = _log_lines(worker)
    for line in lines:
        doc = json.loads(line)
        assert {"level", "logger", "timestamp"} <= doc.keys(), doc


def test_worker_whose_queues_miss_the_prefix_warns_at_start(stack):
    # Given a worker told to consume <prefix>cpu while its AGENTQ_QUEUE_PREFIX is another one
    # (the `-Q cpu` with a prefix set mistake),
    s = stack.settings
    other = s.queue_prefix + "other."
    worker = stack.worker(pool="solo", extra_env={"AGENTQ_QUEUE_PREFIX": other})
    # when it starts, then it logs one warning naming the queues to use instead,
    line = wait_for(lambda: next((json.loads(x) for x in _log_lines(worker)
                                  if "worker_queues_not_configured" in x), None), 60,
                    what="the queue warning")
    assert line["level"] == "warning" and line["queues"] == [s.queue_prefix + "cpu"]
    assert line["hint"] == f"start the worker with -Q {other}cpu"
    # and `celery inspect agentq` reports the same.
    info = _inspect(stack, "agentq", worker.hostname)
    assert info["unconfigured_queues"] == [s.queue_prefix + "cpu"]
    assert info["expected_queues"] == [other + "cpu", other + "gpu"]
