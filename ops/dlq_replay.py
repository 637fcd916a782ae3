"""`agentq dlq replay`: re-submit dead-lettered jobs (failed, rejected, expired) as new attempts.

Reads the DLQ topic from its beginning, keeps the copies that match the filters (``--reason``,
``--model``, ``--since``/``--until`` on the DLQ record time) and, by default, only counts them
(a dry run). With ``--apply`` each matching copy is produced again to the jobs topic with an
``agentq-replay-of`` header; the bridge then brings its job back as a new attempt (the ledger row
is queued again, ``replays`` + 1, attempts from 0) — only if it ended failed, rejected or
expired. A replayed job that is live or succeeded collapses, so replaying twice never runs a job
twice. Copies that are not v1 messages (garbage bytes) cannot be replayed and are counted apart.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from agentq.config import Settings
from producers.contract import Rejection, parse_record
from producers.dlq import REPLAY_HEADER


def register(sub: Any) -> None:
    p = sub.add_parser("dlq", help="dead-letter topic: replay jobs", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")
    r = which.add_parser("replay", help="re-submit dead-lettered jobs (dry run by default)",
                         description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--reason", action="append", help="only this reason (repeatable)")
    r.add_argument("--model", action="append", help="only this model (repeatable)")
    r.add_argument("--since", type=_when, help="ISO time or age like 30m, 2h, 1d")
    r.add_argument("--until", type=_when, help="ISO time or age like 30m, 2h, 1d")
    r.add_argument("--limit", type=int, default=0, help="at most N jobs (0 = all)")
    r.add_argument("--apply", action="store_true", help="really re-submit (default: count)")
    r.set_defaults(run=command)


def _when(text: str) -> datetime:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def select(records: Any, settings: Settings, reasons: set[str] | None, models: set[str] | None,
           since: datetime | None, until: datetime | None) -> tuple[list[Any], Counter]:
    """The DLQ records to replay (the last copy of each job) and counts by reason/model."""
    chosen: dict[str, Any] = {}
    counts: Counter = Counter()
    for rec in records:
        headers = {k: v.decode(errors="replace") for k, v in rec.headers or []}
        reason = headers.get("reason", "?")
        at = datetime.fromtimestamp(rec.timestamp / 1000, UTC)
        if (reasons and reason not in reasons) or (since and at < since) or \
                (until and at > until):
            continue
        job = parse_record(rec.value, settings.limits)
        if isinstance(job, Rejection):
            counts[(reason, "?", "not replayable")] += 1
            continue
        if models and job.model not in models:
            continue
        counts[(reason, job.model, "replayable")] += 1
        chosen[job.job_id] = rec
    return list(chosen.values()), counts


def _read_dlq(settings: Settings) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(group_id=None, enable_auto_commit=False, consumer_timeout_ms=2000,
                      **settings.kafka.client_options())
    try:
        parts = [TopicPartition(settings.kafka.dlq_topic, p)
                 for p in sorted(c.partitions_for_topic(settings.kafka.dlq_topic) or [])]
        if not parts:
            return []
        c.assign(parts)
        c.seek_to_beginning(*parts)
        ends = c.end_offsets(parts)
        out: list[Any] = []
        while any(c.position(tp) < ends[tp] for tp in parts):
            batch = c.poll(timeout_ms=2000)
            if not batch:
                break
            for recs in batch.values():
                out.extend(recs)
        return out
    finally:
        c.close()


def command(args: argparse.Namespace, settings: Settings) -> int:
    records, counts = select(_read_dlq(settings), settings, set(args.reason or []) or None,
                             set(args.model or []) or None, args.since, args.until)
    if args.limit:
        records = records[:args.limit]
    summary: dict[str, Any] = {
        "dlq_topic": settings.kafka.dlq_topic, "jobs_topic": settings.kafka.jobs_topic,
        "counts": [{"reason": r, "model": m, "kind": k, "records": n}
                   for (r, m, k), n in sorted(counts.items())],
        "jobs": len(records), "applied": False}
    if args.apply and records:
        from kafka import KafkaProducer

        producer = KafkaProducer(acks="all", **settings.kafka.client_options())
        try:
            futures = [producer.send(
                settings.kafka.jobs_topic, value=rec.value, key=rec.key,
                headers=[(REPLAY_HEADER, f"{rec.topic}:{rec.partition}:{rec.offset}".encode())])
                for rec in records]
            producer.flush(60)
            for f in futures:
                f.get(timeout=60)
        finally:
            producer.close(10)
        summary["applied"] = True
    print(json.dumps(summary, indent=2))
    return 0
