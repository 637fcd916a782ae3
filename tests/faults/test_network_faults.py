"""Fault matrix, network rows: delay, blackhole (a partition that heals) and reset between the
bridge/worker and Redis or PostgreSQL, through the test proxy; and towards Kafka's bootstrap
address (what a proxy can cover for Kafka: see tests/faults/proxy.py)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from tests.faults.harness import (
    assert_in_flight,
    check_invariants,
    cut_tcp_connections,
    digits_jobs,
    produce,
    warm_stream,
)
from tests.faults.proxy import Proxy
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def _succeeded(db, topic) -> int:
    with db.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM jobs WHERE source_topic = :t AND "
                                 "status = 'succeeded'"), {"t": topic}).scalar_one()


@pytest.fixture
def proxies(faulty, services):
    """Proxies for Redis and PostgreSQL; the stack's processes connect through them."""
    from urllib.parse import urlparse

    r = urlparse(services.redis_url)
    p = urlparse(services.worker_database_url.replace("+psycopg", ""))
    made = {"redis": Proxy(f"{r.hostname}:{r.port}").start(),
            "postgres": Proxy(f"{p.hostname}:{p.port}").start()}
    faulty.env["AGENTQ_REDIS_URL"] = services.redis_url.replace(
        f":{r.port}", f":{made['redis'].port}", 1)
    faulty.env["AGENTQ_WORKER_DATABASE_URL"] = services.worker_database_url.replace(
        f":{p.port}/", f":{made['postgres'].port}/", 1)
    try:
        yield made
    finally:
        faulty.stop_all()  # while the proxies still pass, so shutdown is clean
        for proxy in made.values():
            proxy.stop()


@pytest.mark.parametrize("service", ["postgres", "redis"])
def test_delay_blackhole_and_reset_towards_a_service_lose_no_job(
        faulty, proxies, worker_db, service):
    # Given a bridge and a worker that reach the service only through the proxy,
    s = faulty.settings
    proxy = proxies[service]
    faulty.worker()
    faulty.bridge("--max-batch", "8")
    jobs, stream = warm_stream(s, worker_db)
    assert_in_flight(worker_db, s.kafka.jobs_topic, len(jobs))
    # when the link gets 300 ms of latency, then a 6 s partition, then every connection reset,
    try:
        proxy.set("delay", delay_ms=300)
        time.sleep(3)
        proxy.set("blackhole")
        time.sleep(6)
        proxy.set("reset")
        time.sleep(1)
    finally:
        proxy.set("pass")
    stream.join(120)
    # then every job ends exactly once and all succeed.
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs], len(jobs),
                         timeout_s=180, max_executions=2)
    assert v.statuses == {"succeeded": len(jobs)}, faulty.logs()
    assert proxy.connections > 0


def test_kafka_bootstrap_delay_and_reset_lose_no_job(faulty, worker_db, services):
    # Given a bridge whose Kafka bootstrap address is the proxy (later connections go to the
    # advertised broker address directly),
    s = faulty.settings
    proxy = Proxy(services.kafka.bootstrap_servers.split(",")[0]).start()
    try:
        proxy.set("delay", delay_ms=200)
        faulty.worker()
        faulty.bridge("--max-batch", "8",
                      extra_env={"AGENTQ_KAFKA_BOOTSTRAP": proxy.address})
        jobs = digits_jobs(160)
        produce(s, jobs[:80])
        wait_for(lambda: _succeeded(worker_db, s.kafka.jobs_topic) >= 20, 90,
                 what="some progress")
        assert_in_flight(worker_db, s.kafka.jobs_topic, len(jobs))
        # when the bootstrap connections are reset mid-stream,
        proxy.set("reset")
        produce(s, jobs[80:])
        time.sleep(3)
        proxy.set("pass")
        # then every job ends exactly once.
        v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs],
                             len(jobs), timeout_s=150, max_executions=2)
        assert v.statuses == {"succeeded": len(jobs)}, faulty.logs()
        assert proxy.connections > 0
    finally:
        proxy.stop()


def test_live_kafka_connections_of_the_bridge_cut_mid_stream_lose_and_repeat_no_job(
        faulty, worker_db):
    # Given a bridge and a worker with jobs flowing,
    s = faulty.settings
    faulty.worker(concurrency=2)
    bridge = faulty.bridge("--max-batch", "8")
    jobs = digits_jobs(300)
    produce(s, jobs[:150], pace_s=0.02)
    wait_for(lambda: _succeeded(worker_db, s.kafka.jobs_topic) >= 20, 90, what="some progress")
    assert_in_flight(worker_db, s.kafka.jobs_topic, len(jobs))
    # when every live connection of the bridge to the broker is aborted, three times, while
    # more jobs arrive (not only the bootstrap connection: the fetch, coordinator and producer
    # connections to the advertised address die too),
    port = int(s.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    cuts = []
    for i in range(3):
        cuts.append(cut_tcp_connections(bridge.popen.pid, port))
        produce(s, jobs[150 + 50 * i:200 + 50 * i])
        time.sleep(2)  # a fault schedule, not a synchronisation: the next cut comes 2 s later
    # then the cuts hit live connections, every job ends exactly once, and none ran twice.
    assert all(n > 0 for n in cuts), cuts
    v = check_invariants(worker_db, s.kafka.jobs_topic, [j.job_id for j in jobs], len(jobs),
                         timeout_s=180, max_executions=1)
    assert v.statuses == {"succeeded": len(jobs)}, faulty.logs()
    assert bridge.alive(), faulty.logs()
