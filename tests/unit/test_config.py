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
