"""What the autoscaler, admission control and `agentq status` observe: per-partition Kafka lag,
Celery queue depth, the produce (arrival) rate, and the drain rate measured on the ledger.

Each reader is built once (it holds clients) and read many times; every read is cheap.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from sqlalchemy import Engine

from agentq.config import KafkaSettings, Settings
from ops.autoscaler import PartitionLag
from storage.db import connection
from storage.queries import count_inflight, finished_in_window
from workers.queues import queue_depth


class LagReader:
    """Per-partition lag of a consumer group on a topic, through the Kafka admin API.

    A partition the group never committed on reports ``committed=None``; its lag counts from the
    first offset still on the log, since the bridge starts there (``auto_offset_reset=earliest``).
    """

    def __init__(self, kafka: KafkaSettings, topic: str | None = None,
                 group_id: str | None = None) -> None:
        self.topic = topic or kafka.jobs_topic
        self.group_id = group_id or kafka.group_id
        opts = kafka.client_options()
        self.admin = KafkaAdminClient(client_id="agentq-lag", **opts)
        self.consumer = KafkaConsumer(group_id=None, enable_auto_commit=False,
                                      client_id="agentq-lag", **opts)
        self._parts: list[TopicPartition] = []

    def partitions(self) -> list[TopicPartition]:
        if not self._parts:
            ids = self.consumer.partitions_for_topic(self.topic) or set()
            self._parts = [TopicPartition(self.topic, p) for p in sorted(ids)]
        return self._parts

    def committed(self) -> dict[int, int]:
        if hasattr(self.admin, "list_group_offsets"):  # kafka-python 3.x
            got = self.admin.list_group_offsets({self.group_id: None}).get(self.group_id, {})
        else:  # kafka-python 2.x
            got = self.admin.list_consumer_group_offsets(self.group_id)
        return {tp.partition: om.offset for tp, om in got.items()
                if tp.topic == self.topic and om.offset is not None and om.offset >= 0}

    def read(self) -> list[PartitionLag]:
        parts = self.partitions()
        if not parts:
            return []
        ends = self.consumer.end_offsets(parts)
        starts = self.consumer.beginning_offsets(parts)
        committed = self.committed()
        return [PartitionLag(tp.partition, int(ends.get(tp, 0)), committed.get(tp.partition),
                             int(starts.get(tp, 0))) for tp in parts]

    def close(self) -> None:
        for c in (self.consumer, self.admin):
            try:
                c.close()
            except Exception:  # closing is best effort
                pass


class RateMeter:
    """Rate of a monotonic counter (e.g. the sum of end offsets) over a sliding window."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, value: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._samples.append((now, value))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        return self.rate()

    def ready(self) -> bool:
        return len(self._samples) >= 2

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        return max(0.0, (v1 - v0) / (t1 - t0)) if t1 > t0 else 0.0


class LedgerMeter:
    """Drain rate and batch size measured on the ledger: jobs of one source topic that reached
    a terminal state in the last ``window_s`` (served by the (status, updated_at) index)."""

    def __init__(self, db: Engine, topic: str, window_s: float = 10.0) -> None:
        self.db = db
        self.topic = topic
        self.window_s = window_s

    def read(self) -> tuple[float, float]:
        """(jobs per second, average jobs per batch) over the window."""
        with connection(self.db) as conn:
            n, batches = finished_in_window(conn, self.topic, self.window_s)
        return n / self.window_s, (n / batches if batches else 0.0)

    def inflight(self, partitions: list[int] | None = None) -> int:
        return inflight_jobs(self.db, self.topic, partitions)


def inflight_jobs(db: Engine, topic: str, partitions: list[int] | None = None) -> int:
    """Jobs of ``topic`` dispatched to Celery and not yet terminal (queued or running)."""
    with connection(db) as conn:
        return count_inflight(conn, topic, partitions)


class Observer:
    """Everything one autoscaler tick needs, from live services."""

    def __init__(self, settings: Settings, db: Engine, window_s: float = 10.0) -> None:
        self.s = settings
        self.lag = LagReader(settings.kafka)
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self.ledger = LedgerMeter(db, settings.kafka.jobs_topic, window_s)
        self.arrivals = RateMeter(window_s)

    def read(self) -> dict[str, Any]:
        parts = self.lag.read()
        arrival = self.arrivals.add(sum(p.end_offset for p in parts))
        arrival_or_none = arrival if self.arrivals.ready() else None
        throughput, batch = self.ledger.read()
        return {"partitions": parts, "queue_depth": queue_depth(self.redis, self.s.queue_prefix),
                "throughput_jobs_s": throughput, "avg_batch_size": batch or
                float(self.s.bridge.max_batch), "arrival_jobs_s": arrival_or_none}

    def close(self) -> None:
        self.lag.close()
        self.redis.close()


class KafkaBacklog:
    """Backlog of the bridge's consumer group for producer admission control
    (``producers.admission.BacklogSource``): total lag, drained at the commit rate."""

    def __init__(self, kafka: KafkaSettings, topic: str | None = None,
                 group_id: str | None = None, window_s: float = 10.0) -> None:
        self.reader: Any = LagReader(kafka, topic, group_id)
        self.drained = RateMeter(window_s)

    def read(self) -> tuple[int, float | None]:
        parts = self.reader.read()
        consumed = sum(p.end_offset - p.lag for p in parts)
        rate = self.drained.add(consumed)
        return sum(p.lag for p in parts), (rate if self.drained.ready() else None)

    def close(self) -> None:
        self.reader.close()
