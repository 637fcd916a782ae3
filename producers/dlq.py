"""Dead-letter publishing: original bytes plus reason and source coordinates in headers."""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer

from agentq.config import KafkaSettings


def dlq_headers(reason: str, detail: str, topic: str | None, partition: int | None,
                offset: int | None, job_id: str | None = None) -> list[tuple[str, bytes]]:
    h = [("reason", reason.encode()), ("detail", detail[:1000].encode())]
    if topic is not None:
        h += [("source_topic", topic.encode()), ("source_partition", str(partition).encode()),
              ("source_offset", str(offset).encode())]
    if job_id:
        h.append(("job_id", job_id.encode()))
    return h


class DeadLetters:
    """A producer for the DLQ topic; ``send`` returns a future, ``flush`` waits for acks."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = settings.dlq_topic
        self.producer = KafkaProducer(acks="all", linger_ms=5, retries=5,
                                      max_request_size=2 * 1024 * 1024,
                                      **settings.client_options())

    def send(self, value: bytes | None, reason: str, detail: str, *, topic: str | None = None,
             partition: int | None = None, offset: int | None = None,
             job_id: str | None = None, key: bytes | None = None) -> Any:
        return self.producer.send(self.topic, value=value or b"", key=key,
                                  headers=dlq_headers(reason, detail, topic, partition, offset,
                                                      job_id))

    def flush(self, timeout_s: float = 30.0) -> None:
        self.producer.flush(timeout=timeout_s)

    def close(self) -> None:
        self.producer.close(timeout=5)
