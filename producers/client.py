"""``JobClient``: submit jobs and await their results, sync or asyncio, without touching SQL.

Each client listens on its own reply topic (``AGENTQ_REPLY_TOPIC_PREFIX`` + a random id,
created on demand with ``AGENTQ_REPLY_TOPIC_PARTITIONS`` / ``_RETENTION_MS`` and deleted at
close; or a name you pass, which is kept, and which several clients may share: each resolves
only its own jobs). Every job it submits carries that topic as ``reply_to``; the result event,
published after the ledger commit that made the job terminal (``ops.relay``), resolves the
job's :class:`~producers.handles.JobHandle` by job_id. Duplicate events are ignored.

    with JobClient(settings) as client:
        h = client.submit(JobMessage.new("minilm-l6", {"text": "reset my password"}))
        emb = h.result(timeout=30).raise_for_status().embedding
        results = client.wait(client.submit_many(jobs), timeout=60)

    async with JobClient(settings) as client:           # asyncio, one loop
        res = await client.submit_async(job, timeout=30)
        async for res in client.as_completed_async(client.submit_many(jobs)): ...

Memory is bounded: at most ``AGENTQ_REPLY_MAX_OUTSTANDING`` handles wait at once (a submit past
it raises :class:`ClientFull`); a handle costs a few hundred bytes, and its waiting primitives
exist only while someone waits. Admission control (``admission=``) raises
:class:`Backpressure` from ``submit`` when the backlog is over its limit. A timeout raises
:class:`ReplyTimeout` saying what the ledger knows when ``db_url`` is given.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from agentq.config import Settings
from agentq.log import get_logger
from producers import handles as _handles
from producers.contract import JobMessage, Rejection, validate_message
from producers.errors import (
    ClientClosed,
    ClientFull,
    InvalidJob,
    ProducerError,
    ReplyTimeout,
    SubmitFailed,
)
from producers.handles import JobHandle
from producers.producer import JobProducer
from producers.replies import TERMINAL, JobResult
from producers.topics import delete_topics, ensure_reply_topic

log = get_logger("agentq.client")


class JobClient:
    def __init__(self, settings: Settings, reply_topic: str | None = None,
                 db_url: str | None = None, admission: Any = None,
                 max_outstanding: int | None = None, linger_ms: int = 2,
                 start_timeout_s: float = 30.0) -> None:
        self.settings = settings
        r = settings.replies
        self.reply_topic = reply_topic or f"{r.topic_prefix}{uuid.uuid4().hex}"
        self._owns_topic = reply_topic is None
        self.max_outstanding = max_outstanding or r.max_outstanding
        self.db_url = db_url
        self.lock = threading.Lock()
        self._pending: dict[str, JobHandle] = {}
        self._closed = False
        self._stop = threading.Event()
        self.stats = {"submitted": 0, "replies": 0, "ignored": 0}
        self._db: Any = None
        ensure_reply_topic(settings.kafka, self.reply_topic, r.topic_partitions,
                           r.topic_retention_ms)
        self._consumer = self._subscribe(start_timeout_s)
        self._producer = JobProducer(settings.kafka, settings.limits, linger_ms=linger_ms,
                                     admission=admission)
        self._thread = threading.Thread(target=self._consume, name="agentq-client-replies",
                                        daemon=True)
        self._thread.start()

    # -- the reply topic -----------------------------------------------------------------------
    def _subscribe(self, timeout_s: float) -> KafkaConsumer:
        """Assign every partition of the reply topic at its end, before anything is submitted,
        so no reply to this client's jobs can be missed."""
        consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100,
                                 client_id="agentq-client", **self.settings.kafka.client_options())
        end = time.monotonic() + timeout_s
        parts = consumer.partitions_for_topic(self.reply_topic)
        while not parts:
            if time.monotonic() > end:
                consumer.close()
                raise ProducerError(f"reply topic {self.reply_topic} has no partitions after "
                                    f"{timeout_s:g}s")
            time.sleep(0.1)
            consumer.topics()  # refresh metadata
            parts = consumer.partitions_for_topic(self.reply_topic)
        tps = [TopicPartition(self.reply_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)  # resolve the end offset now, not at the first poll
        return consumer

    def _consume(self) -> None:
        while not self._stop.is_set():
            try:
                polled = self._consumer.poll(timeout_ms=200)
            except Exception as e:  # the broker went away: keep trying until closed
                log.warning("reply_poll_failed", topic=self.reply_topic, error=str(e)[:200])
                self._stop.wait(1.0)
                continue
            for records in polled.values():
                for rec in records:
                    self._on_reply(rec.value)

    def _on_reply(self, value: bytes | None) -> None:
        try:
            result = JobResult.decode(value or b"")
        except (ValueError, KeyError, TypeError) as e:
            log.warning("reply_undecodable", topic=self.reply_topic, error=str(e)[:200])
            return
        with self.lock:
            handle = self._pending.pop(result.job_id, None)
            key = "ignored" if handle is None else "replies"
            self.stats[key] += 1  # ignored: a duplicate, or another client's job on its topic
        if handle is not None:
            handle.settle(result=result)

    # -- submitting ----------------------------------------------------------------------------
    def _prepare(self, job: JobMessage | dict[str, Any]) -> JobMessage:
        if isinstance(job, dict):
            checked = validate_message({"v": 1, **job} if "v" not in job else job,
                                       self.settings.limits)
            if isinstance(checked, Rejection):
                raise InvalidJob(f"{checked.reason.value}: {checked.detail}")
            job = checked
        if job.reply_to not in (None, self.reply_topic):
            raise InvalidJob(f"job {job.job_id} asks for replies on {job.reply_to}; this client "
                             f"listens on {self.reply_topic}")
        return replace(job, reply_to=self.reply_topic)

    def submit(self, job: JobMessage | dict[str, Any], routing_key: str | None = None,
               admission_timeout_s: float | None = None) -> JobHandle:
        """Send one job; its handle resolves when the reply arrives. Raises InvalidJob,
        Backpressure (admission), ClientFull (too many outstanding) or ClientClosed. Sending
        a job_id that is still outstanding returns its handle (the job_id is the idempotency
        key)."""
        msg = self._prepare(job)
        with self.lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            same = self._pending.get(msg.job_id)
            if same is not None:
                return same
            if len(self._pending) >= self.max_outstanding:
                raise ClientFull(f"{len(self._pending)} jobs await replies (the most this "
                                 "client holds); wait for some first")
            handle = self._pending[msg.job_id] = JobHandle(msg.job_id, self)
            self.stats["submitted"] += 1
        try:
            future = self._producer.send(msg, routing_key, validate=True,
                                         admission_timeout_s=admission_timeout_s)
        except BaseException as e:
            with self.lock:
                self._pending.pop(msg.job_id, None)
            if isinstance(e, KafkaError):  # e.g. no metadata within max_block_ms
                raise SubmitFailed(f"job {msg.job_id} was not sent: {e}") from e
            raise
        future.add_errback(self._send_failed, msg.job_id)
        return handle

    def _send_failed(self, job_id: str, error: BaseException) -> None:
        with self.lock:
            handle = self._pending.pop(job_id, None)
        if handle is not None:
            handle.settle(error=SubmitFailed(f"job {job_id} was not accepted by Kafka: {error}"))

    def submit_many(self, jobs: Iterable[JobMessage | dict[str, Any]]) -> list[JobHandle]:
        handles = [self.submit(j) for j in jobs]
        self._producer.flush()
        return handles

    def handle_for(self, job_id: str) -> JobHandle:
        """A handle for a job sent some other way (kcat, another process, before a restart)
        with this client's topic as its ``reply_to``; it resolves when a reply arrives."""
        job_id = str(uuid.UUID(job_id))
        with self.lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            handle = self._pending.get(job_id)
            if handle is None:
                if len(self._pending) >= self.max_outstanding:
                    raise ClientFull(f"{len(self._pending)} jobs await replies")
                handle = self._pending[job_id] = JobHandle(job_id, self)
            return handle

    def forget(self, handle: JobHandle) -> None:
        """Stop waiting for a job (its reply, if it comes, is ignored)."""
        with self.lock:
            self._pending.pop(handle.job_id, None)

    def outstanding(self) -> int:
        with self.lock:
            return len(self._pending)

    def flush(self, timeout_s: float | None = None) -> None:
        self._producer.flush(timeout_s)

    # -- waiting -------------------------------------------------------------------------------
    def wait(self, handles: Sequence[JobHandle], timeout: float | None = None) -> list[JobResult]:
        """Every handle's result, in order, within ``timeout`` seconds overall."""
        self._producer.flush()
        return _handles.wait(handles, timeout)

    def as_completed(self, handles: Iterable[JobHandle], timeout: float | None = None
                     ) -> Iterator[JobResult]:
        self._producer.flush()
        return _handles.as_completed(handles, timeout)

    async def submit_async(self, job: JobMessage | dict[str, Any], timeout: float | None = None,
                           routing_key: str | None = None) -> JobResult:
        """Submit and await the result on the running loop."""
        return await (await self.submit_handle_async(job, routing_key)).result_async(timeout)

    async def submit_handle_async(self, job: JobMessage | dict[str, Any],
                                  routing_key: str | None = None) -> JobHandle:
        """Submit without waiting for the reply; admission control reads run off the loop."""
        if self._producer.admission is None:
            return self.submit(job, routing_key)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.submit, job, routing_key)

    def as_completed_async(self, handles: Iterable[JobHandle], timeout: float | None = None
                           ) -> AsyncIterator[JobResult]:
        """``async for result in client.as_completed_async(handles)``."""
        return _handles.as_completed_async(handles, timeout)

    # -- what the ledger knows -----------------------------------------------------------------
    def timeout_error(self, job_id: str, timeout_s: float) -> ReplyTimeout:
        if not self.db_url:
            return ReplyTimeout(job_id, timeout_s, "the ledger was not consulted (no database "
                                "URL given to the client)")
        try:
            row = self._ledger_row(job_id)
        except Exception as e:  # a diagnosis must not hide the timeout itself
            return ReplyTimeout(job_id, timeout_s, f"the ledger could not be read: {e}"[:300])
        return ReplyTimeout(job_id, timeout_s, *ledger_says(row, self.reply_topic))

    def _ledger_row(self, job_id: str) -> dict[str, Any] | None:
        from storage.db import connection, make_engine
        from storage.queries import job_report

        if self._db is None:
            self._db = make_engine(self.db_url or "", pool_size=1, app_name="agentq-client")
        with connection(self._db) as conn:
            return job_report(conn, job_id)

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self, timeout_s: float = 10.0) -> None:
        with self.lock:
            if self._closed:
                return
            self._closed = True
            left, self._pending = list(self._pending.values()), {}
        self._stop.set()
        self._thread.join(timeout_s)
        self._producer.close(timeout_s)
        self._consumer.close()
        for h in left:
            h.settle(error=ClientClosed(f"the client closed before job {h.job_id} replied"))
        if self._db is not None:
            self._db.dispose()
        if self._owns_topic:
            try:
                delete_topics(self.settings.kafka, [self.reply_topic])
            except Exception as e:  # best effort: retention empties it anyway
                log.warning("reply_topic_not_deleted", topic=self.reply_topic, error=str(e)[:200])

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> JobClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)


def ledger_says(row: dict[str, Any] | None, reply_topic: str | None = None
                ) -> tuple[str, str]:
    """(sentence, status) for a timeout: what the ledger row of a job tells."""
    if row is None:
        return ("the ledger has no row for it: unknown (no bridge has taken it from Kafka yet: "
                "is one running, consuming this jobs topic?)", "unknown")
    status = row["status"]
    now = datetime.now(UTC)
    if status == "queued":
        since = row.get("queued_at") or row.get("received_at")
        ago = f" for {(now - since).total_seconds():.1f}s" if since else ""
        return f"the ledger says queued{ago} (waiting for a worker)", status
    if status == "running":
        started = row.get("started_at")
        ago = f", started {(now - started).total_seconds():.1f}s ago" if started else ""
        return f"the ledger says running (attempt {row.get('attempts')}{ago})", status
    if status in TERMINAL:
        what = f"the ledger says {status}" + (f" ({row['reason']})" if row.get("reason") else "")
        if not row.get("reply_to"):
            return f"{what}, but the job has no reply topic", status
        if row.get("reply_sent_at"):
            where = "" if row["reply_to"] == reply_topic else " (not this client's topic)"
            return (f"{what}, and its reply was sent to {row['reply_to']}{where} at "
                    f"{row['reply_sent_at'].isoformat()}", status)
        err = f"; last publish error: {row['reply_error']}" if row.get("reply_error") else ""
        return f"{what}; its reply waits in the outbox (is a relay running?){err}", status
    return f"the ledger says {status}", status
