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
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from sqlalchemy import Engine

from agentq import metrics
from agentq.config import Settings
from agentq.failpoints import failpoint
from agentq.log import get_logger
from bridge.batcher import Batch, MicroBatcher
from bridge.buckets import bucket_fns, bucket_upper
from bridge.dispatch import Dispatcher
from bridge.inflight import InflightGate
from bridge.isolate import write_isolating
from bridge.offsets import OffsetTracker
from bridge.rebalance import Listener
from bridge.records import Item, Reject, is_replay, produced_ms
from bridge.rejects import DeadLetterUnavailable, RejectWriter
from bridge.routing import Router
from bridge.vitals import Vitals
from models.catalog import CATALOG
from producers.contract import Rejection, RejectReason, parse_record
from producers.dlq import DeadLetters
from storage.db import connection, transaction
from storage.errors import StorageUnavailable
from storage.ledger import insert_jobs, queue_jobs
from storage.registry import placements, registered_names
from storage.schema import JobStatus
from workers.batch import JobBatch
from workers.queue_scan import jobs_in_queues
from workers.queues import publish

log = get_logger("agentq.bridge")


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
        self.reject_writer = RejectWriter(settings, self.dlq, self._write_rejects,
                                          self.reply_topic)
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
        self.listener = Listener(self)
        self.consumer.subscribe([k.jobs_topic], listener=self.listener)

    # -- rebalance -------------------------------------------------------------------------
    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        self.tracker.assign(partitions)
        log.info("partitions_assigned", partitions=[p.partition for p in partitions])

    def forget(self, partitions: list[TopicPartition]) -> None:
        """After a revoke: nothing of these partitions is tracked for lag and liveness."""
        for tp in partitions:
            self._next_offset.pop(tp, None)
        self.vitals.forget(partitions)

    # -- main loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info("bridge_started", topic=self.s.kafka.jobs_topic, group=self.s.kafka.group_id,
                 max_batch=self.s.bridge.max_batch, max_wait_ms=self.s.bridge.max_wait_ms)
        try:
            while not stop.is_set():
                self.step()
        except DeadLetterUnavailable as e:
            log.error("bridge_stopping_dlq_unavailable", error=str(e))
            self.shutdown(flush=False)
            raise
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
        if self.listener.fatal is not None:  # raised while partitions were being revoked
            raise self.listener.fatal
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
        if not busy:
            return wait
        depth = self.router.depth(self.s.bridge.busy_depth_max_age_ms / 1000)
        return max(wait, busy) if depth > 0 else wait

    def _accept(self, tp: TopicPartition, r: Any, now_ms: float) -> None:
        self.stats["received"] += 1
        ticket = self.tracker.received(tp, r.offset)
        self._next_offset[tp] = r.offset + 1
        produced = produced_ms(r.timestamp, now_ms)
        res = parse_record(r.value, self.s.limits, self.known_models, int(now_ms))
        if isinstance(res, Rejection):
            self.rejects.append(Reject(ticket, res, r.value, r.key, tp.topic, tp.partition,
                                       r.offset, produced, now_ms))
            return
        item = Item(ticket, res, tp.topic, tp.partition, r.offset, produced, now_ms,
                    is_replay(r.headers))
        full = self.batcher.add(res.model, item, now_ms)
        if full is not None:
            self.dispatch(full)

    # -- durability ------------------------------------------------------------------------
    def dispatch(self, batch: Batch) -> None:
        """Expire late jobs, then make the batch durable (ledger → publish) on a dispatch
        thread; its records are marked done when the completion is harvested."""
        now_ms = time.time() * 1000
        live: list[Item] = []
        repeats: list[Item] = []  # same job_id and content twice in one batch: the first runs
        seen: dict[str, Item] = {}
        for it in batch.items:
            first = seen.get(it.job.job_id)
            if it.job.deadline_ms is not None and it.job.deadline_ms < now_ms:
                self.rejects.append(Reject.of(it, Rejection(
                    RejectReason.EXPIRED, "deadline passed while batching", it.job.job_id,
                    reply_to=it.job.reply_to)))
            elif first is not None and first.job == it.job:
                repeats.append(it)
            elif first is not None:
                self.rejects.append(duplicate_reject(it))
            else:
                seen[it.job.job_id] = it
                live.append(it)
        if not live:
            return
        live.sort(key=lambda it: -it.job.priority)
        queue = self.router.queue_for(batch.model)
        jobs = JobBatch.new(batch.model)
        for it in live:
            jobs.add(it.job, topic=it.topic, partition=it.partition, offset=it.offset,
                     produced_ms=it.produced_ms, received_ms=it.received_ms, replay=it.replay,
                     reply_to=self.reply_topic(it.job.reply_to))
        rows = jobs.ledger_rows(queue, now_ms)
        published: dict[str, float] = {}

        def durable() -> tuple[int, set[tuple[str, str]], list[tuple[dict[str, Any], str]]]:
            decided, refused = write_isolating(self._record, rows)  # on a dispatch thread
            again = {j for j, verdict in decided if verdict == "redelivered"}
            lost = again - self._still_waiting(again, queue)
            to_run = jobs.only({j for j, verdict in decided if verdict == "dispatch"} | lost)
            if len(to_run):
                self._retry_io(lambda: self.publish(to_run, queue), "celery_publish")
                published["ms"] = time.time() * 1000
                failpoint("bridge.after_publish")
            return len(to_run), decided, refused

        def completed(result: tuple[int, set[tuple[str, str]],
                                    list[tuple[dict[str, Any], str]]]) -> None:
            sent, decided, refused = result  # on the bridge's thread: tracker and stats here
            bad = {row["job_id"]: why for row, why in refused}
            conflicts = {j for j, verdict in decided if verdict == "conflict"}
            for it in live:
                if it.job.job_id in bad:  # refused by the ledger: rejected, never lost
                    self.rejects.append(Reject.of(it, Rejection(
                        RejectReason.STORAGE_REFUSED, f"the ledger refused this job: "
                        f"{bad[it.job.job_id]}", it.job.job_id, reply_to=it.job.reply_to)))
                elif it.job.job_id in conflicts:
                    self.rejects.append(duplicate_reject(it))
            bad.update(dict.fromkeys(conflicts, "duplicate"))
            repeated = len(live) + len(repeats) - sent - len(bad)
            self.stats["duplicates"] += repeated
            metrics.duplicates(batch.model, repeated)
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
                if it.job.job_id not in bad:
                    self.tracker.done(it.ticket)

        self.dispatcher.submit(durable, completed)

    def _still_waiting(self, job_ids: set[str], queue: str) -> set[str]:
        """Of jobs redelivered by Kafka (this bridge's predecessor made them durable, then died
        before its commit), those whose Celery message still waits: publishing them again would
        run them twice. Read only after such a crash; when Redis cannot tell, none are published
        (the reaper re-publishes the lost ones after their lease)."""
        if not job_ids:
            return set()
        try:
            waiting, too_long = jobs_in_queues(self.router.redis, [queue])
        except Exception as e:  # Redis down: leave them to the reaper
            log.warning("redelivery_check_failed", error=str(e)[:200])
            return set(job_ids)
        return set(job_ids) if too_long else job_ids & waiting

    def reply_topic(self, asked: str | None) -> str | None:
        """The job's own reply topic, else the default results topic (None: no reply)."""
        return asked or self.s.kafka.results_topic or None

    def _record(self, rows: Any) -> set[tuple[str, str]]:
        def write() -> set[tuple[str, str]]:
            with transaction(self.db) as conn:
                q = queue_jobs(conn, rows)
            return ({(j, "dispatch") for j in q.dispatch} | {(j, "repeat") for j in q.repeats}
                    | {(j, "conflict") for j in q.conflicts}
                    | {(j, "redelivered") for j in q.redelivered})

        return self._retry_db(write)

    def flush_rejects(self) -> None:
        if not self.rejects:
            return
        rejects, self.rejects = self.rejects, []
        self.reject_writer.write(rejects)
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

    def _write_rejects(self, rows: Any) -> set[str]:
        def write() -> set[str]:
            with transaction(self.db) as conn:
                return insert_jobs(conn, rows)

        return self._retry_db(write)

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

    def shutdown(self, flush: bool = True) -> None:
        """Make everything durable and commit (``flush=False``: only what is already durable)."""
        try:
            if flush:
                self.flush_all()
            else:
                self.dispatcher.wait_all()
            self.commit(force=True)
        finally:
            self.dispatcher.close()
            self.router.close()
            self.dlq.close()
            self.consumer.close(autocommit=False)
            log.info("bridge_stopped", **self.stats)


def duplicate_reject(it: Item) -> Reject:
    """A record whose job_id is already taken by another job's content: refused, with a ledger
    row keyed by the record (the first job's row stays as it is) and a DLQ copy."""
    return Reject.of(it, Rejection(
        RejectReason.DUPLICATE_JOB_ID, f"job_id {it.job.job_id} is already used by a job with "
        "other content (input, tenant, meta, priority or deadline); send new work with a new "
        "job_id", it.job.job_id, {"keyed_by_record": True}))


def make_batcher(settings: Settings) -> MicroBatcher:
    """The bridge's micro-batcher: token buckets for text models, bigger digits batches."""
    b = settings.bridge
    scale = {name: b.batch_scale.get(name, entry.batch_scale) for name, entry in CATALOG.items()}
    return MicroBatcher(b.max_batch, b.max_wait_ms, bucket_fns=bucket_fns(),
                        max_batch_for={m: b.max_batch * k for m, k in scale.items() if k != 1},
                        bucket_upper=bucket_upper, merge_pad_tokens=b.merge_pad_tokens)
