"""What the Celery queues hold, read from Redis: the job_ids in each queue's waiting list and in
the broker's unacknowledged set, and which queues some live worker consumes.

The reaper uses it to re-publish exactly the stuck jobs whose message is gone, even while their
queue keeps a backlog, and never a job whose message still waits: no duplicated backlog.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from agentq.log import get_logger
from workers.batch import JobBatch

log = get_logger("agentq.reaper")

SCAN_LIMIT = 20_000  # messages read per queue; a longer queue is treated as holding everything
UNACKED = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged messages


def _job_ids(raw: bytes | str) -> list[str]:
    """The job_ids of one kombu message (JSON envelope, base64 JSON body), [] if not ours."""
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # the unacked hash holds [message, exchange, routing_key]
            msg = msg[0]
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return JobBatch.from_payload(args[0]).job_ids
    except (ValueError, KeyError, IndexError, TypeError) as e:  # not a run_batch message
        log.debug("queue_message_skipped", error=str(e)[:100])
        return []


def jobs_in_queues(client: redis.Redis, queues: list[str], limit: int = SCAN_LIMIT
                   ) -> tuple[set[str], set[str]]:
    """(job_ids found waiting in ``queues`` or unacknowledged anywhere, queues too long to
    read whole). Redis errors propagate: the caller then re-publishes nothing of those queues."""
    found: set[str] = set()
    too_long: set[str] = set()
    for q in queues:
        if client.llen(q) > limit:
            too_long.add(q)
            continue
        for raw in client.lrange(q, 0, limit - 1):
            found.update(_job_ids(raw))
    if client.hlen(UNACKED) <= limit:
        for raw in client.hvals(UNACKED):
            found.update(_job_ids(raw))
    else:
        too_long.update(queues)
    return found, too_long


def consumed_queues(celery_app: Any, timeout_s: float = 1.0) -> set[str] | None:
    """Queues some live worker consumes now; None when no worker answered (unknown)."""
    try:
        replies = celery_app.control.inspect(timeout=timeout_s).active_queues() or {}
    except Exception as e:  # broker down: unknown, re-route nothing
        log.warning("active_queues_unavailable", error=str(e)[:200])
        return None
    if not replies:
        return None
    return {q.get("name") for qs in replies.values() for q in qs or [] if q.get("name")}
