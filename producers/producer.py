"""JobProducer: idempotent, compressed, batched publishing of v1 job messages to Kafka."""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer

from agentq.config import KafkaSettings, Limits
from producers.contract import JobMessage, Rejection, validate_message
from producers.errors import InvalidJob, ProducerError


class JobProducer:
    """Publishes jobs keyed by ``routing_key`` (or job_id) with acks=all and idempotence.

    Compression defaults to gzip, which needs no extra library (lz4, zstd and snappy do); measured
    on digits jobs it costs no more producer CPU than no compression (~185 µs per job either way,
    dominated by kafka-python) and shrinks what the broker stores.

    ``send`` validates the job locally first (a job the bridge would reject is refused here with
    :class:`InvalidJob`), then returns the Kafka future.
    """

    def __init__(self, settings: KafkaSettings, limits: Limits | None = None,
                 compression: str | None = "gzip", linger_ms: int = 10,
                 batch_size: int = 256 * 1024, topic: str | None = None,
                 admission: Any = None) -> None:
        self.settings = settings
        self.limits = limits or Limits()
        self.topic = topic or settings.jobs_topic
        self.admission = admission  # producers.admission.Admission: backlog limit in seconds
        try:
            self._producer = KafkaProducer(
                acks="all", enable_idempotence=True, compression_type=compression,
                linger_ms=linger_ms, batch_size=batch_size, retries=10,
                max_in_flight_requests_per_connection=5, client_id="agentq-producer",
                **settings.client_options(),
            )
        except Exception as e:
            raise ProducerError(f"cannot create a Kafka producer for {settings.bootstrap_servers}"
                                f" (compression {compression!r}): {e}") from e

    def send(self, job: JobMessage | dict[str, Any], routing_key: str | None = None,
             validate: bool = True, admission_timeout_s: float | None = None) -> Any:
        """With an ``admission`` set, raises Backpressure over its backlog limit, after waiting
        up to ``admission_timeout_s`` (default: the admission's own timeout)."""
        if isinstance(job, dict):
            checked = validate_message(job, self.limits)
            if isinstance(checked, Rejection):
                raise InvalidJob(f"{checked.reason.value}: {checked.detail}")
            job = checked
        elif validate:
            checked = validate_message(job.to_dict(), self.limits)
            if isinstance(checked, Rejection):
                raise InvalidJob(f"{checked.reason.value}: {checked.detail}")
        value = job.encode()
        if len(value) > self.limits.max_record_bytes:
            raise InvalidJob(f"PAYLOAD_TOO_LARGE: {len(value)} bytes, "
                             f"limit {self.limits.max_record_bytes}")
        key = (routing_key or job.job_id).encode()
        if self.admission is not None:
            self.admission.admit(admission_timeout_s)
        return self._producer.send(self.topic, value=value, key=key)

    def send_raw(self, value: bytes, key: bytes | None = None) -> Any:
        """Publish bytes as they are (tests and tools that exercise the bridge's validation)."""
        return self._producer.send(self.topic, value=value, key=key)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> JobProducer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
