"""The bridge: Kafka jobs topic → validation → micro-batches → ledger → Celery, with safe offsets.

Order per record, always: ledger row (or DLQ ack + ledger row) → Celery publish → offset done.
Offsets are committed only up to the lowest record not yet durable (see ``bridge.offsets``).

Batches are made durable on a few threads (``bridge.dispatch``) so database and broker round
trips overlap; their completions are applied to the offset tracker on the bridge's own thread,
in whatever order they finish. minilm-l6 jobs are bucketed by token length
(``bridge.buckets``); digits-mlp, which is pipeline-bound, gets batches
``MODEL_BATCH_SCALE`` times ``max_batch``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from sqlalchemy import Engine

from agentq import metrics
from agentq.config import Settings
from agentq.failpoints import failpoint
from agentq.log import get_logger
from bridge.batcher import Batch, MicroBatcher
from bridge.buckets import bucket_fns
from bridge.dispatch import Dispatcher
from bridge.inflight import InflightGate
from bridge.offsets import OffsetTracker, Ticket
from bridge.routing import Router
from bridge.vitals import Vitals
from models.catalog import CATALOG
from producers.contract import JobMessage, Rejection, RejectReason, parse_record
from producers.dlq import DeadLetters
from storage.db import connection, transaction
from storage.errors import StorageUnavailable
from storage.ledger import insert_jobs, queue_jobs
from storage.registry import placements, registered_names
from storage.schema import JobStatus
from workers.batch import JobBatch
from workers.queues import publish

log = get_logger("agentq.bridge")
REJECT_NS = uuid.UUID("6f1c2d4e-7a8b-4c9d-8e0f-123456789abc")


def _ts(ms: float | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def record_job_id(topic: str, partition: int, offset: int) -> str:
    """Stable id for a record that carries no usable job_id, so redelivery collapses."""
    return str(uuid.uuid5(REJECT_NS, f"{topic}:{partition}:{offset}"))


@dataclass
class Item:
    ticket: Ticket
    job: JobMessage
    topic: str
    partition: int
    offset: int
    produced_ms: int | None
    received_ms: float


@dataclass
class Reject:
    ticket: Ticket
    rejection: Rejection
    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    produced_ms: int | None
    received_ms: float
    model: str | None = None


class _Listener(ConsumerRebalanceListener):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.bridge.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.bridge.on_assigned(list(assigned))


class Bridge:
    def __init__(self, settings: Settings, db: Engine, celery_app: Any,
                 consumer: KafkaConsumer | None = None, dlq: DeadLetters | None = None,
                 router: Router | None = None, dispatch_threads: int | None = None,
                 batcher: MicroBatcher | None = None,
                 publisher: Callable[[JobBatch, str], None] | None = None) -> None:
        self.s = settings
        self.db = db
        self.celery = celery_app
        self.dlq = dlq or DeadLetters(settings.kafka)
        self.router = router or Router(settings, celery_app)
        self.publish = publisher or (lambda batch, queue: publish(celery_app, batch, queue))
        self.tracker = OffsetTracker()
        self.inflight = InflightGate(settings, db)
        self.batcher = batcher if batcher is not None else make_batcher(settings)
        self.dispatcher = Dispatcher(settings.bridge.dispatch_threads
                                     if dispatch_threads is None else dispatch_threads)
        self.rejects: list[Reject] = []
        self.known_models: set[str] = set()
        self._models_checked = 0.0
        self._last_commit = 0.0
        self.paused = False
        self.stats = {"received": 0, "dispatched": 0, "rejected": 0, "batches": 0,
                      "duplicates": 0}
        self._next_offset: dict[TopicPartition, int] = {}  # after the last record received
        self.vitals = Vitals(settings.bridge.heartbeat_file)
        k = settings.kafka
        self.consumer = consumer or KafkaConsumer(
            group_id=k.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=settings.bridge.poll_max_records,
            session_timeout_ms=k.session_timeout_ms, max_poll_interval_ms=k.max_poll_interval_ms,
            fetch_max_wait_ms=50, client_id="agentq-bridge",
            # A subscription made before its topic's metadata is known would otherwise wait for
            # the default 5-minute metadata refresh before it gets partitions.
            metadata_max_age_ms=10_000, **k.client_options(),
        )
        self.consumer.subscribe([k.jobs_topic], listener=_Listener(self))

    # -- rebalance -------------------------------------------------------------------------
    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        self.tracker.assign(partitions)
        log.info("partitions_assigned", partitions=[p.partition for p in partitions])

    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        """Make everything buffered durable, commit what we still own, then let go."""
        self.flush_all()
        self.commit(force=True)
        self.tracker.revoke(partitions)
        for tp in partitions:
            self._next_offset.pop(tp, None)
        self.vitals.forget(partitions)
        log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    # -- main loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info("bridge_started", topic=self.s.kafka.jobs_topic, group=self.s.kafka.group_id,
                 max_batch=self.s.bridge.max_batch, max_wait_ms=self.s.bridge.max_wait_ms)
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.shutdown()

    def step(self) -> None:
        self._refresh_models()
        self.apply_backpressure()
        timeout = self.s.bridge.poll_timeout_ms
        window = self.window_ms()
        deadline = self.batcher.next_deadline_ms(window)
        if deadline is not None:
            timeout = int(max(0, min(timeout, deadline - time.time() * 1000)))
        polled = self.consumer.poll(timeout_ms=timeout, max_records=self.s.bridge.poll_max_records)
        now_ms = time.time() * 1000
        for tp, records in polled.items():
            for r in records:
                self._accept(tp, r, now_ms)
        for batch in self.batcher.due(time.time() * 1000, window):
            self.dispatch(batch)
        self.dispatcher.harvest()
        self.flush_rejects()
        self.commit()
        self.vitals.tick(self.consumer, self._next_offset)

    def window_ms(self) -> float:
        """``max_wait_ms``, or up to ``busy_wait_ms`` while batches already wait in the Celery
        queue: a batch sent now would only queue behind them, so it may as well grow (bigger
        batches, hence more throughput, exactly when the workers are the bottleneck); it goes
        as soon as the queue is empty again."""
        wait = self.s.bridge.max_wait_ms
        busy = self.s.bridge.busy_wait_ms
        return max(wait, busy) if busy and self.router.depth() > 0 else wait

    def _accept(self, tp: TopicPartition, r: Any, now_ms: float) -> None:
        self.stats["received"] += 1
        ticket = self.tracker.received(tp, r.offset)
        self._next_offset[tp] = r.offset + 1
        produced = r.timestamp if r.timestamp and r.timestamp > 0 else None
        res = parse_record(r.value, self.s.limits, self.known_models, int(now_ms))
        if isinstance(res, Rejection):
            self.rejects.append(Reject(ticket, res, r.value, r.key, tp.topic, tp.partition,
                                       r.offset, produced, now_ms))
            return
        item = Item(ticket, res, tp.topic, tp.partition, r.offset, produced, now_ms)
        full = self.batcher.add(res.model, item, now_ms)
        if full is not None:
            self.dispatch(full)

    # -- durability ------------------------------------------------------------------------
    def dispatch(self, batch: Batch) -> None:
        """Expire late jobs, then make the batch durable (ledger → publish) on a dispatch
        thread; its records are marked done when the completion is harvested."""
        now_ms = time.time() * 1000
        live: list[Item] = []
        repeats: list[Item] = []  # same job_id twice in one batch: the first one runs
        seen: set[str] = set()
        for it in batch.items:
            if it.job.deadline_ms is not None and it.job.deadline_ms < now_ms:
                self.rejects.append(Reject(
                    it.ticket, Rejection(RejectReason.EXPIRED, "deadline passed while batching",
                                         it.job.job_id),
                    it.job.encode(), None, it.topic, it.partition, it.offset, it.produced_ms,
                    it.received_ms, it.job.model))
            elif it.job.job_id in seen:
                repeats.append(it)
            else:
                seen.add(it.job.job_id)
                live.append(it)
        if not live:
            return
        live.sort(key=lambda it: -it.job.priority)
        queue = self.router.queue_for(batch.model)
        jobs = JobBatch.new(batch.model)
        for it in live:
            jobs.add(it.job, topic=it.topic, partition=it.partition, offset=it.offset,
                     produced_ms=it.produced_ms, received_ms=it.received_ms)
        rows = jobs.ledger_rows(queue, now_ms)
        published: dict[str, float] = {}

        def durable() -> int:  # on a dispatch thread: no tracker, no stats here
            to_run = jobs.only(self._retry_db(lambda: self._record(rows)))
            if len(to_run):
                self._retry_io(lambda: self.publish(to_run, queue), "celery_publish")
                published["ms"] = time.time() * 1000
                failpoint("bridge.after_publish")
            return len(to_run)

        def completed(sent: int) -> None:  # on the bridge's thread
            self.stats["duplicates"] += len(live) + len(repeats) - sent
            if sent:
                self.stats["dispatched"] += sent
                self.stats["batches"] += 1
                self.inflight.dispatched(sent)
                metrics.batch_dispatched(batch.model, sent, queue,
                                         [it.produced_ms for it in live],
                                         [it.received_ms for it in live], published.get("ms"))
                log.debug("batch_dispatched", batch_id=jobs.batch_id, model=batch.model,
                          batch_size=sent, queue=queue)
            for it in live + repeats:
                self.tracker.done(it.ticket)

        self.dispatcher.submit(durable, completed)

    def _record(self, rows: list[dict[str, Any]]) -> set[str]:
        with transaction(self.db) as conn:
            return queue_jobs(conn, rows)

    def flush_rejects(self) -> None:
        if not self.rejects:
            return
        rejects, self.rejects = self.rejects, []
        futures = [self.dlq.send(r.value, r.rejection.reason.value, r.rejection.detail,
                                 topic=r.topic, partition=r.partition, offset=r.offset,
                                 job_id=r.rejection.job_id, key=r.key) for r in rejects]
        now = datetime.now(UTC)
        rows = [{
            "job_id": r.rejection.job_id or record_job_id(r.topic, r.partition, r.offset),
            "model": r.model or "?",
            "status": (JobStatus.EXPIRED if r.rejection.reason == RejectReason.EXPIRED
                       else JobStatus.REJECTED),
            "reason": r.rejection.reason.value, "error": r.rejection.detail[:2000],
            "source_topic": r.topic, "source_partition": r.partition, "source_offset": r.offset,
            "produced_at": _ts(r.produced_ms), "received_at": _ts(r.received_ms),
            "finished_at": now,
        } for r in rejects]
        self._retry_db(lambda: self._record_rejects(rows))
        self._retry_io(lambda: [f.get(timeout=30) for f in futures], "dlq_publish")
        for r in rejects:
            self.tracker.done(r.ticket)
        self.stats["rejected"] += len(rejects)
        counts: dict[tuple[str, str, str], int] = {}
        for r in rejects:
            status = JobStatus.EXPIRED if r.rejection.reason == RejectReason.EXPIRED \
                else JobStatus.REJECTED
            key = (r.model if r.model in self.known_models else "?", status.value,
                   r.rejection.reason.value)
            counts[key] = counts.get(key, 0) + 1
        metrics.jobs_rejected(counts)
        log.info("records_rejected", count=len(rejects),
                 reasons=sorted({r.rejection.reason.value for r in rejects}))

    def _record_rejects(self, rows: list[dict[str, Any]]) -> None:
        with transaction(self.db) as conn:
            insert_jobs(conn, rows)

    def flush_all(self) -> None:
        """Everything buffered or in flight durable and marked done."""
        for batch in self.batcher.drain():
            self.dispatch(batch)
        self.dispatcher.wait_all()
        self.flush_rejects()

    def commit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (now - self._last_commit) * 1000 < self.s.bridge.commit_interval_ms:
            return
        self._last_commit = now
        offsets = self.tracker.committable()
        if not offsets:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1)
                                  for tp, off in offsets.items()})
            self.tracker.mark_committed(offsets)
        except Exception as e:  # a failed commit is retried next time; records stay safe
            log.warning("commit_failed", error=str(e))

    # -- backpressure and models -----------------------------------------------------------
    def apply_backpressure(self) -> None:
        depth = self.router.depth()
        b = self.s.bridge
        assigned = list(self.consumer.assignment())
        full = self.inflight.full(assigned, self.tracker.pending_count(), depth, self.paused)
        if not self.paused and (depth >= b.queue_high_watermark or full):
            self.consumer.pause(*assigned)
            self.paused = True
            log.info("partitions_paused", queue_depth=depth, inflight_full=full)
        elif self.paused and depth <= b.queue_low_watermark and not full:
            self.consumer.resume(*assigned)
            self.paused = False
            log.info("partitions_resumed", queue_depth=depth)

    def _refresh_models(self) -> None:
        if time.monotonic() - self._models_checked < 10 and self.known_models:
            return
        try:
            with connection(self.db) as conn:
                self.known_models = registered_names(conn)
                self.router.set_placements(placements(conn))
            self._models_checked = time.monotonic()
        except StorageUnavailable as e:
            log.warning("registry_unavailable", error=str(e)[:200])

    # -- retry helpers ---------------------------------------------------------------------
    def _retry_db(self, fn: Any) -> Any:
        return self._retry_io(fn, "ledger_write", retry_on=(StorageUnavailable,))

    def _retry_io(self, fn: Any, what: str, retry_on: tuple[type[BaseException], ...] = (
            Exception,)) -> Any:
        delay = 0.1
        while True:
            try:
                return fn()
            except retry_on as e:
                log.warning("retrying", what=what, error=str(e)[:200], delay_s=round(delay, 2))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def shutdown(self) -> None:
        try:
            self.flush_all()
            self.commit(force=True)
        finally:
            self.dispatcher.close()
            self.router.close()
            self.dlq.close()
            self.consumer.close(autocommit=False)
            log.info("bridge_stopped", **self.stats)


def make_batcher(settings: Settings) -> MicroBatcher:
    """The bridge's micro-batcher: token buckets for text models, bigger digits batches."""
    b = settings.bridge
    scale = {name: b.batch_scale.get(name, entry.batch_scale) for name, entry in CATALOG.items()}
    return MicroBatcher(b.max_batch, b.max_wait_ms, bucket_fns=bucket_fns(),
                        max_batch_for={m: b.max_batch * k for m, k in scale.items() if k != 1})
