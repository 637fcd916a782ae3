"""A password-protected Redis: the Celery app and the bridge's router connect with
AGENTQ_REDIS_PASSWORD and are refused without it (a private redis-server, not the shared one)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
import redis

from agentq.config import Settings
from tests.conftest import IN_CI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


PASSWORD = "pw-9f2@a/b:c%41"  # the characters that break an unescaped URL


@pytest.fixture
def protected_redis(tmp_path):
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server not installed")
        pytest.skip("redis-server not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                redis.Redis(port=port, password=PASSWORD).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_clients_use_the_redis_password(protected_redis):
    from bridge.routing import Router
    from workers.app import make_celery
    from workers.batch import JobBatch

    env = {**os.environ, "AGENTQ_REDIS_URL": f"redis://127.0.0.1:{protected_redis}/0",
           "AGENTQ_REDIS_PASSWORD": PASSWORD}
    s = Settings.from_env(env)
    assert "pw-9f2" not in repr(s)
    app = make_celery(s)
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
    app.send_task("agentq.run_batch", args=[JobBatch.new("m", "b").to_payload()],
                  queue="pwtest.cpu")
    assert Router(s, app).redis.llen("pwtest.cpu") == 1

    no_pw = Settings.from_env({k: v for k, v in env.items() if k != "AGENTQ_REDIS_PASSWORD"})
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(no_pw.redis_url).ping()
