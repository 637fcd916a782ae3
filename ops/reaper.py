"""The reaper: re-enqueues jobs stuck in ``queued`` or ``running`` past their lease.

Celery loses tasks in known ways (Redis restarted without persistence, a worker killed with
its task unacknowledged, a publish lost with the bridge). The ledger does not: every live job
not touched for ``lease_s`` is re-published as a ``run_batch`` built from its ``input`` column,
grouped by model and queue. A job lost while ``running`` is re-published still ``running``, so
the worker runs it on its own and counts its attempt (``storage.ledger``); one already at
``max_attempts`` is ``failed`` (``WORKER_CRASHED``) with a DLQ copy, so a job that kills its
worker cannot loop forever. Jobs past their deadline are ``expired``.

A stuck job is re-published only when its message is gone: the reaper reads the queues it
belongs to (and the broker's unacknowledged set) and leaves alone every job whose message still
waits there, so a queue with a backlog gets back exactly its lost jobs and never a duplicate of
its backlog (a queue too long to read whole is left for a later pass). Jobs of a queue that no
live worker consumes (`gpu` with no GPU worker) are re-routed to one that a live worker consumes,
and their ledger row says which.

Runs as ``agentq reaper`` (a loop; ``--once`` for one pass) and as a thread in the bridge.
Several reapers are safe: rows are locked with SKIP LOCKED and their lease renewed.
"""

from __future__ import annotations

import argparse
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import Engine

from agentq import metrics
from agentq.config import Settings
from agentq.log import get_logger
from producers.contract import RejectReason
from producers.dlq import SEND_WINDOW_S, dead_letter_and_mark
from storage.db import connection, transaction
from storage.errors import StorageUnavailable
from storage.ledger import expire_jobs, fail_jobs
from storage.queries import stuck_queues
from storage.recovery import move_jobs, owed_dead_letters, take_stuck
from storage.schema import JobStatus
from workers.batch import JobBatch
from workers.queue_scan import consumed_queues, jobs_in_queues
from workers.queues import publish, queue_names

log = get_logger("agentq.reaper")


@dataclass
class ReapStats:
    requeued: int = 0
    failed: int = 0
    expired: int = 0
    batches: int = 0


class Reaper:
    def __init__(self, settings: Settings, db: Engine, celery_app: Any,
                 lease_s: float | None = None, limit: int = 2000,
                 redis_client: Any = None) -> None:
        self.s = settings
        self.db = db
        self.celery = celery_app
        self.redis = redis_client or redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        self.lease_s = float(lease_s if lease_s is not None else settings.worker.lease_s)
        self.limit = limit
        self._dlq: Any = None
        self._live: set[str] | None = None  # queues with a live consumer, read once per pass

    def reap_once(self) -> ReapStats:
        st = ReapStats()
        now = datetime.now(UTC)
        limit = self.s.worker.max_attempts
        with connection(self.db) as conn:
            queues = [q or self._default_queue() for q in stuck_queues(conn, self.lease_s)]
        if not queues:
            return st
        self._live = consumed_queues(self.celery)
        readable = [q for q in queues if self._live is None or q in self._live]
        waiting, unreadable = self._waiting(readable)
        with transaction(self.db) as conn:
            rows = take_stuck(conn, self.lease_s, self.limit, skip_queues=sorted(unreadable),
                              max_attempts=limit)
            rows = [r for r in rows if r["job_id"] not in waiting]  # its message still waits
            if not rows:
                return st
            late = [r for r in rows if r["deadline_at"] is not None and r["deadline_at"] < now]
            gone = {r["job_id"] for r in late}
            dead = [r for r in rows if r["job_id"] not in gone and r["status"] == JobStatus.RUNNING
                    and r["attempts"] >= limit]
            gone |= {r["job_id"] for r in dead}
            again = [r for r in rows if r["job_id"] not in gone]
            st.expired = expire_jobs(conn, [(r["job_id"], RejectReason.EXPIRED.value,
                                             "deadline passed while stuck") for r in late], now)
            failed = fail_jobs(conn, [(
                r["job_id"], RejectReason.WORKER_CRASHED.value,
                f"lost while running {r['attempts']} times; gave up"
                + (f" (last error: {r['error']})" if r["error"] else "")) for r in dead], now)
        st.failed = len(failed)
        dead_letter_and_mark(self.db, self._dead_letters(), failed)
        st.requeued, st.batches = self._publish(again)
        metrics.reaper_pass(st.requeued, _by_model(failed), _by_model(late) if st.expired else {})
        if rows:
            log.info("stuck_jobs_reaped", requeued=st.requeued, failed=st.failed,
                     expired=st.expired, batches=st.batches, lease_s=self.lease_s)
        return st

    def send_owed_dead_letters(self) -> int:
        """DLQ copies of failed jobs that were never acknowledged (their send failed, or the
        process sending them died): sent again until the DLQ takes them."""
        with transaction(self.db) as conn:  # claimed: no other sender takes them meanwhile
            owed = owed_dead_letters(conn, older_than_s=max(SEND_WINDOW_S, self.lease_s / 4))
        if not owed:
            return 0
        sent = dead_letter_and_mark(self.db, self._dead_letters(), owed)
        log.info("owed_dead_letters_sent", owed=len(owed), sent=len(sent))
        return len(sent)

    def _default_queue(self) -> str:
        return queue_names(self.s.queue_prefix)[0]

    def _waiting(self, queues: list[str]) -> tuple[set[str], set[str]]:
        """(job_ids whose message still waits in a queue or at a worker, queues to leave alone
        this pass: too long to read, or Redis not answering)."""
        try:
            return jobs_in_queues(self.redis, sorted(set(queues)))
        except redis.RedisError as e:
            log.warning("reaper_redis_unavailable", error=str(e)[:200])
            return set(), set(queues)

    def _route(self, queue: str) -> str:
        """``queue``, or a queue some live worker consumes when none consumes it (jobs routed to
        `gpu` while no GPU worker lives run on `cpu`)."""
        live = self._live
        if live is None or queue in live:
            return queue
        for q in queue_names(self.s.queue_prefix):
            if q in live:
                log.info("jobs_rerouted", from_queue=queue, to_queue=q)
                return q
        return queue

    def _publish(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """Publish run_batch tasks; a failed publish leaves the jobs for the next lease."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            queue = self._route(r["queue"] or self._default_queue())
            groups.setdefault((r["model"], queue), []).append(r)
        size = max(1, self.s.bridge.max_batch)
        sent = batches = 0
        for (model, queue), group in groups.items():
            for i in range(0, len(group), size):
                chunk = group[i:i + size]
                batch = JobBatch.from_ledger_rows(model, chunk, f"reap-{uuid.uuid4()}")
                try:
                    if any((r["queue"] or self._default_queue()) != queue for r in chunk):
                        with transaction(self.db) as conn:
                            move_jobs(conn, batch.job_ids, queue)
                    publish(self.celery, batch, queue, retry_policy={"max_retries": 2})
                except Exception as e:  # Redis or DB down: the lease brings them back later
                    log.warning("reaper_publish_failed", error=str(e)[:200], jobs=len(chunk))
                    continue
                sent += len(chunk)
                batches += 1
        return sent, batches

    def _dead_letters(self) -> Any:
        if self._dlq is None:
            try:
                from producers.dlq import DeadLetters

                self._dlq = DeadLetters(self.s.kafka)
            except Exception as e:  # a side concern; the ledger says failed already
                log.warning("dlq_unavailable", error=str(e)[:200])
        return self._dlq

    def run(self, stop: threading.Event, interval_s: float | None = None) -> None:
        every = interval_s if interval_s is not None else max(1.0, self.lease_s / 4)
        log.info("reaper_started", lease_s=self.lease_s, interval_s=every)
        while not stop.wait(every):
            try:
                self.reap_once()
                self.send_owed_dead_letters()
            except StorageUnavailable as e:
                log.warning("reaper_db_unavailable", error=str(e)[:200])
            except Exception as e:  # the reaper must outlive any one bad pass
                log.warning("reaper_pass_failed", error=str(e)[:300])
        self.close()

    def close(self) -> None:
        if self._dlq is not None:
            self._dlq.close()
            self._dlq = None


def _by_model(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[str(row.get("model") or "?")] = out.get(str(row.get("model") or "?"), 0) + 1
    return out


def start_reaper(settings: Settings, db: Engine, celery_app: Any,
                 stop: threading.Event) -> threading.Thread | None:
    """Run a reaper thread next to the bridge (unless ``settings.bridge.reaper`` is off:
    AGENTQ_BRIDGE_REAPER=0)."""
    if not settings.bridge.reaper:
        return None
    t = threading.Thread(target=Reaper(settings, db, celery_app).run, args=(stop,),
                         name="agentq-reaper", daemon=True)
    t.start()
    return t


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--lease-s", type=float, help="default: AGENTQ_WORKER_LEASE_S")
    p.add_argument("--interval-s", type=float, help="default: a quarter of the lease")


def register(sub: Any) -> None:
    p = sub.add_parser("reaper", help="re-enqueue jobs stuck past their lease", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=command)


def command(args: argparse.Namespace, settings: Settings) -> int:
    from agentq.shutdown import stop_on_signals
    from storage.db import make_engine
    from workers.app import make_celery

    db = make_engine(settings.worker_database_url, pool_size=1, app_name="agentq-reaper")
    reaper = Reaper(settings, db, make_celery(settings), lease_s=args.lease_s)
    try:
        if args.once:
            st = reaper.reap_once()
            print(f"requeued={st.requeued} failed={st.failed} expired={st.expired}")
            reaper.close()
        else:
            reaper.run(stop_on_signals(), args.interval_s)
    finally:
        db.dispose()
    return 0
