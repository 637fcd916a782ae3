"""Settings from the environment; secrets redacted."""

from pathlib import Path

from agentq.config import Settings, redact


def test_env_overrides_defaults_with_types():
    s = Settings.from_env({"AGENTQ_BRIDGE_MAX_BATCH": "7", "AGENTQ_KAFKA_BOOTSTRAP": "h:1",
                           "AGENTQ_MODELS_DIR": "/m", "AGENTQ_LOG_JSON": "true"})
    assert s.bridge.max_batch == 7
    assert s.kafka.bootstrap_servers == "h:1"
    assert s.worker.models_dir == Path("/m")
    assert s.log_json is True


def test_repr_never_shows_passwords():
    s = Settings.from_env({"AGENTQ_DATABASE_URL": "postgresql://u:hunter2@h/db",
                           "AGENTQ_KAFKA_SASL_PASSWORD": "s3cret",
                           "AGENTQ_REDIS_PASSWORD": "r3dis"})
    text = repr(s)
    assert "hunter2" not in text and "s3cret" not in text and "r3dis" not in text
    assert "r3dis" in s.redis_url  # the real value is still there for the client


def test_redact():
    assert redact("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact("postgresql+psycopg://a:b@c/d") == "postgresql+psycopg://a:***@c/d"


def test_log_redaction_reaches_nested_values():
    from agentq.log import _redact_processor

    event = {"event": "connecting", "options": {"sasl_plain_password": "pw1",
                                                "url": "redis://:pw2@h:1/0",
                                                "nested": [{"api_token": "pw3"}]},
             "password": "pw4", "bootstrap": "h:9092"}
    out = repr(_redact_processor(None, "info", event))
    for secret in ("pw1", "pw2", "pw3", "pw4"):
        assert secret not in out
    assert "h:9092" in out


def test_every_knob_is_a_setting_read_from_the_environment():
    s = Settings.from_env({
        "AGENTQ_ROUTE_MINILM_L6": "gpu", "AGENTQ_BRIDGE_BATCH_SCALE_DIGITS_MLP": "8",
        "AGENTQ_BRIDGE_REAPER": "0", "AGENTQ_BRIDGE_DISPATCH_THREADS": "5",
        "AGENTQ_METRICS_PORT": "9109", "AGENTQ_ENGINE_N_SLOTS": "32",
        "AGENTQ_ENGINE_RUN_DIR": "/tmp/eng", "AGENTQ_AUTOSCALE_MAX_WORKERS": "6",
        "AGENTQ_AUTOSCALE_TARGET_DRAIN_S": "12.5", "AGENTQ_WORKER_MAX_TASK_RETRIES": "2",
        "AGENTQ_WORKER_RETRY_BACKOFF_S": "0.25"})
    assert s.routes == {"minilm-l6": "gpu"}
    assert s.bridge.batch_scale == {"digits-mlp": 8}
    assert s.bridge.reaper is False and s.bridge.dispatch_threads == 5
    assert s.metrics_port == 9109
    assert s.engine.n_slots == 32 and s.engine.run_dir == Path("/tmp/eng")
    assert s.autoscale.max_workers == 6 and s.autoscale.target_drain_s == 12.5
    assert s.worker.max_task_retries == 2 and s.worker.retry_backoff_s == 0.25
    defaults = Settings.from_env({})
    assert defaults.routes == {} and defaults.bridge.reaper is True
    assert defaults.engine.run_dir is None and defaults.metrics_port == 0


TRICKY = "p@ss/w:rd%40#?"


def test_redis_password_is_url_escaped_and_read_back_by_redis_py_and_kombu():
    import redis
    from kombu import Connection

    s = Settings.from_env({"AGENTQ_REDIS_URL": "redis://redis:6379/0",
                           "AGENTQ_REDIS_PASSWORD": TRICKY})
    assert s.redis_url.startswith("redis://:p%40ss%2Fw%3Ard%2540%23%3F@redis:6379/0")
    assert redis.Redis.from_url(s.redis_url).connection_pool.connection_kwargs["password"] \
        == TRICKY
    conn = Connection(s.redis_url)
    assert (conn.password, conn.hostname, conn.port) == (TRICKY, "redis", 6379)
    assert TRICKY not in repr(s) and "p%40ss" not in repr(s)


def test_a_url_with_credentials_wins_over_the_password_variable():
    s = Settings.from_env({"AGENTQ_REDIS_URL": "redis://:inline@h:1/0",
                           "AGENTQ_REDIS_PASSWORD": "other"})
    assert s.redis_url == "redis://:inline@h:1/0"
