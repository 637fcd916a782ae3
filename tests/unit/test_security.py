"""Security basics without services: Kafka SASL/SSL settings reach the clients and never the
logs, the Redis password goes into the broker URL only, limits apply before any JSON parsing."""

from __future__ import annotations

import json

import pytest
import structlog

from agentq.config import Limits, Settings
from agentq.log import configure_logging, get_logger
from producers import contract
from producers.contract import RejectReason, parse_record

SASL_ENV = {
    "AGENTQ_KAFKA_BOOTSTRAP": "k1:9093,k2:9093",
    "AGENTQ_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "AGENTQ_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "AGENTQ_KAFKA_SASL_USERNAME": "agentq",
    "AGENTQ_KAFKA_SASL_PASSWORD": "kafka-s3cret",
    "AGENTQ_KAFKA_SSL_CAFILE": "/etc/ssl/ca.pem",
    "AGENTQ_REDIS_PASSWORD": "redis-s3cret",
    "AGENTQ_DATABASE_URL": "postgresql+psycopg://agentq_owner:pg-s3cret@db/agentq",
}
SECRETS = ("kafka-s3cret", "redis-s3cret", "pg-s3cret")


def test_kafka_sasl_and_ssl_settings_are_passed_to_every_client():
    opts = Settings.from_env(SASL_ENV).kafka.client_options()
    assert opts == {
        "bootstrap_servers": ["k1:9093", "k2:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "agentq",
        "sasl_plain_password": "kafka-s3cret",
        "ssl_cafile": "/etc/ssl/ca.pem",
    }


def test_redis_password_goes_into_the_broker_url_and_nowhere_visible():
    s = Settings.from_env(SASL_ENV)
    assert s.redis_url == "redis://:redis-s3cret@127.0.0.1:16379/0"
    assert "redis-s3cret" not in repr(s)


@pytest.fixture
def fresh_logging():
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize("as_json", [False, True])
def test_secrets_are_redacted_in_logs(fresh_logging, capsys, as_json):
    configure_logging("INFO", as_json)
    s = Settings.from_env(SASL_ENV)
    opts = s.kafka.client_options()
    log = get_logger("test")
    log.info("settings_loaded", settings=s, kafka=s.kafka, redis_url=s.redis_url,
             database_url=s.database_url, sasl_plain_password=opts["sasl_plain_password"])
    out = capsys.readouterr().err
    assert "settings_loaded" in out
    for secret in SECRETS:
        assert secret not in out


@pytest.mark.parametrize("value", [
    b"[" * 100_000,  # oversized and absurdly deep
    b'{"v":1,"x":' + b"[" * 50 + b"]" * 50 + b"}",  # small but too deep
])
def test_size_and_depth_are_checked_before_json_parsing(monkeypatch, value):
    def no_parse(*_a, **_k):
        raise AssertionError("json.loads called on a record over the limits")

    monkeypatch.setattr(contract.json, "loads", no_parse)
    res = parse_record(value, Limits())
    assert res.reason in (RejectReason.PAYLOAD_TOO_LARGE, RejectReason.TOO_DEEP)


def test_record_at_the_size_limit_is_still_parsed():
    limits = Limits(max_record_bytes=200)
    value = json.dumps({"v": 1, "job_id": "x"}).encode().ljust(200)
    assert parse_record(value, limits).reason == RejectReason.SCHEMA
    assert parse_record(value + b" ", limits).reason == RejectReason.PAYLOAD_TOO_LARGE
