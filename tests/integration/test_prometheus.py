"""Prometheus (Debian's package, started by scripts/services.sh as a user would) scrapes a live
bridge and worker and answers the dashboard's questions: throughput and a latency quantile.
Also: the bridge's own health check follows the bridge, not its dependencies."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest

from producers.producer import JobProducer
from producers.synthetic import synthetic_jobs
from tests.conftest import IN_CI
from tests.support import REPO, wait_for, wait_terminal

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path):
    """A private Prometheus (own AGENTQ_HOME and port) via `scripts/services.sh up prometheus`;
    ``start(bridges, workers)`` returns a query function."""
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        msg = "prometheus not installed (Debian package prometheus)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    port = _free_port()
    env = {**os.environ, "AGENTQ_HOME": str(tmp_path / "home"),
           "AGENTQ_PROMETHEUS_PORT": str(port), "AGENTQ_PROMETHEUS_SCRAPE_INTERVAL": "1s",
           "AGENTQ_PROMETHEUS_AUTOSCALERS": ""}
    started: list[bool] = []

    def start(bridges: str, workers: str) -> Any:
        run_env = {**env, "AGENTQ_PROMETHEUS_BRIDGES": bridges,
                   "AGENTQ_PROMETHEUS_WORKERS": workers}
        out = subprocess.run(["bash", "scripts/services.sh", "up", "prometheus"], cwd=REPO,
                             env=run_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        started.append(True)

        def query(promql: str) -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode(
                {"query": promql})
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
            assert body["status"] == "success", body
            return body["data"]["result"]

        query.port = port  # type: ignore[attr-defined]
        return query

    yield start
    if started:
        subprocess.run(["bash", "scripts/services.sh", "down", "prometheus"], cwd=REPO, env=env,
                       capture_output=True, timeout=60)


def _scalar(result: list[dict[str, Any]]) -> float | None:
    if not result:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def _check_bridge(heartbeat: Any, max_age_s: float) -> int:
    return subprocess.run([sys.executable, "-m", "cli.main", "check", "--bridge",
                           "--heartbeat-file", str(heartbeat), "--max-age-s", str(max_age_s)],
                          cwd=REPO, capture_output=True, timeout=60).returncode


def test_prometheus_scrapes_bridge_and_worker_and_answers_rate_and_latency(
        stack, worker_db, prometheus, tmp_path):
    # Given a bridge and a worker serving metrics, and Prometheus scraping both every second,
    s = stack.settings
    bridge_port, worker_port = _free_port(), _free_port()
    heartbeat = tmp_path / "bridge.alive"
    stack.worker(concurrency=1, extra_env={"AGENTQ_METRICS_PORT": str(worker_port)})
    bridge = stack.bridge(extra_env={"AGENTQ_METRICS_PORT": str(bridge_port),
                                     "AGENTQ_BRIDGE_HEARTBEAT_FILE": str(heartbeat)})
    query = prometheus(f"127.0.0.1:{bridge_port}", f"127.0.0.1:{worker_port}")
    wait_for(lambda: len([r for r in query("up") if r["value"][1] == "1"]) == 2, 60,
             what="both targets up")
    # when digits jobs flow for a few seconds,
    jobs = list(synthetic_jobs("digits-mlp", 240, seed=5))
    with JobProducer(s.kafka, s.limits) as producer:
        for i in range(0, len(jobs), 40):
            for job in jobs[i:i + 40]:
                producer.send(job)
            producer.flush()
            time.sleep(0.5)
    statuses = wait_terminal(worker_db, [j.job_id for j in jobs], timeout_s=120)
    assert set(statuses.values()) == {"succeeded"}, stack.logs()
    # then Prometheus has a throughput (rate of the jobs counter) and latency quantiles,
    rate = wait_for(lambda: _scalar(query(
        'sum(rate(agentq_jobs_total{model="digits-mlp",status="succeeded"}[1m]))')), 60,
        what="a job rate")
    assert rate > 0
    p90 = wait_for(lambda: _scalar(query(
        "histogram_quantile(0.9, sum by (le) (rate(agentq_job_latency_seconds_bucket[1m])))")),
        60, what="a latency quantile")
    assert 0 < p90 < 120
    stages = {r["metric"]["stage"] for r in query("sum by (stage) (agentq_stage_seconds_count)")}
    assert stages == {"kafka", "bridge", "celery", "run"}
    # (the counters reach Prometheus one scrape after the jobs finished)
    wait_for(lambda: _scalar(query('sum(agentq_jobs_dispatched_total{model="digits-mlp"})'))
             == len(jobs), 30, what="every dispatched job counted")
    wait_for(lambda: _scalar(query('sum(agentq_jobs_total{model="digits-mlp"})')) == len(jobs),
             30, what="every finished job counted")
    # and the shipped rules are loaded,
    rules = query("agentq:jobs:rate1m")
    assert rules is not None
    # and the bridge's health check passes while its loop turns, and fails once it stopped.
    assert _check_bridge(heartbeat, 5) == 0
    bridge.stop()
    time.sleep(2.5)
    assert _check_bridge(heartbeat, 2) == 1
