"""The reaper: re-enqueues jobs stuck in ``queued`` or ``running`` past their lease.

Celery loses tasks in known ways (Redis restarted without persistence, a worker killed with
its task unacknowledged, a publish lost with the bridge). The ledger does not: every live job
not touched for ``lease_s`` is re-published as a ``run_batch`` built from its ``input`` column,
grouped by model and queue. A job lost while ``running`` is re-published still ``running``, so
the worker runs it on its own and counts its attempt (``storage.ledger``); one already at
``max_attempts`` is ``failed`` (``WORKER_CRASHED``) with a DLQ copy, so a job that kills its
worker cannot loop forever. Jobs past their deadline are ``expired``.

Jobs are re-published only while their Celery queue is empty: a queue that still holds a
backlog may hold them (or an earlier re-published copy), and an abandoned queue nobody consumes
must not grow; lost jobs are re-published once it drains, so under sustained overload recovery
waits for the backlog, it is never skipped.

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
from producers.dlq import dead_letter
from storage.db import connection, transaction
from storage.errors import StorageUnavailable
from storage.ledger import expire_jobs, fail_jobs, take_stuck
from storage.queries import stuck_queues
from storage.schema import JobStatus
from workers.batch import JobBatch
from workers.queues import publish

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

    def reap_once(self) -> ReapStats:
        st = ReapStats()
        now = datetime.now(UTC)
        limit = self.s.worker.max_attempts
        with connection(self.db) as conn:
            busy = self._busy_queues(stuck_queues(conn, self.lease_s))
        with transaction(self.db) as conn:
            rows = take_stuck(conn, self.lease_s, self.limit, skip_queues=busy,
                              max_attempts=limit)
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
        if failed:
            dead_letter(self._dead_letters(), failed)
        st.requeued, st.batches = self._publish(again)
        metrics.reaper_pass(st.requeued, _by_model(failed), _by_model(late) if st.expired else {})
        if rows:
            log.info("stuck_jobs_reaped", requeued=st.requeued, failed=st.failed,
                     expired=st.expired, batches=st.batches, lease_s=self.lease_s)
        return st

    def _busy_queues(self, queues: list[str]) -> list[str]:
        """The queues that still hold messages (all of them when Redis does not answer)."""
        if not queues:
            return []
        try:
            pipe = self.redis.pipeline()
            for q in queues:
                pipe.llen(q or self.s.queue_prefix + "cpu")
            return [q for q, n in zip(queues, pipe.execute(), strict=True) if n]
        except redis.RedisError as e:
            log.warning("reaper_redis_unavailable", error=str(e)[:200])
            return queues

    def _publish(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """Publish run_batch tasks; a failed publish leaves the jobs for the next lease."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            queue = r["queue"] or self.s.queue_prefix + "cpu"
            groups.setdefault((r["model"], queue), []).append(r)
        size = max(1, self.s.bridge.max_batch)
        sent = batches = 0
        for (model, queue), group in groups.items():
            for i in range(0, len(group), size):
                chunk = group[i:i + size]
                batch = JobBatch.from_ledger_rows(model, chunk, f"reap-{uuid.uuid4()}")
                try:
                    publish(self.celery, batch, queue, retry_policy={"max_retries": 2})
                except Exception as e:  # Redis down: the lease brings them back next time
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
