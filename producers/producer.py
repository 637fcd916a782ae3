"""JobProducer: idempotent, compressed, batched publishing of v1 job messages to Kafka."""

from __future__ import annotations

from typing import Any

import msgspec
from kafka import KafkaProducer

from agentq.config import KafkaSettings, Limits
from producers.contract import JobMessage, Rejection, validate_message
from producers.errors import InvalidJob, ProducerError
from producers.partitioner import KeyHashPartitioner

_ENCODE = msgspec.json.Encoder().encode


class JobProducer:
    """Publishes jobs keyed by ``routing_key`` (or job_id) with acks=all and idempotence.

    Compression defaults to lz4 (the ``lz4`` package is a runtime dependency). kafka-python's gzip
    always compresses at level 9: measured on digits jobs (one process, acks=all, idempotence) it
    cost 201 µs of producer CPU per job and capped a process at ~5,000 jobs/s, against 40 µs and
    ~25,000 jobs/s with lz4 and 45 µs with no compression (lz4 sends fewer bytes); consumers read
    either (``kafka-python`` decodes lz4 when the package is installed, as in every agentq image).

    Records are keyed by routing key or job_id and partitioned as the Java client does
    (``producers.partitioner``: the same choice as kafka-python's default, faster).

    ``send`` validates the job locally first (a job the bridge would reject is refused here with
    :class:`InvalidJob`), then returns the Kafka future.
    """

    def __init__(self, settings: KafkaSettings, limits: Limits | None = None,
                 compression: str | None = "lz4", linger_ms: int = 10,
                 batch_size: int = 256 * 1024, topic: str | None = None,
                 admission: Any = None, partitioner: Any = None) -> None:
        self.settings = settings
        self.limits = limits or Limits()
        self.topic = topic or settings.jobs_topic
        self.admission = admission  # producers.admission.Admission: backlog limit in seconds
        try:
            self._producer = KafkaProducer(
                acks="all", enable_idempotence=True, compression_type=compression,
                linger_ms=linger_ms, batch_size=batch_size, retries=10,
                max_in_flight_requests_per_connection=5, client_id="agentq-producer",
                partitioner=partitioner or KeyHashPartitioner(), **settings.client_options(),
            )
        except Exception as e:
            raise ProducerError(f"cannot create a Kafka producer for {settings.bootstrap_servers}"
                                f" (compression {compression!r}): {e}") from e

    def send(self, job: JobMessage | dict[str, Any], routing_key: str | None = None,
             validate: bool = True, admission_timeout_s: float | None = None) -> Any:
        """With an ``admission`` set, raises Backpressure over its backlog limit, after waiting
        up to ``admission_timeout_s`` (default: the admission's own timeout)."""
        checked: JobMessage | Rejection | None = None
        if isinstance(job, dict):
            checked = validate_message(job, self.limits)
            if isinstance(checked, Rejection):
                raise InvalidJob(f"{checked.reason.value}: {checked.detail}")
            job = checked
        elif validate:
            checked = validate_message(job.to_dict(), self.limits)
            if isinstance(checked, Rejection):
                raise InvalidJob(f"{checked.reason.value}: {checked.detail}")
        # A validated job holds only finite numbers and UTF-8 text: msgspec writes the same JSON
        # as JobMessage.encode in a quarter of the time (it would write NaN as null, hence only
        # after validation).
        value = _ENCODE(job.to_dict()) if (validate or checked is not None) else job.encode()
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
