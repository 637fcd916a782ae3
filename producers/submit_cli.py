"""`agentq submit` (one job, optionally waiting for its result) and `agentq result JOB_ID`.

Both print one JSON object on stdout: the job's result event (``producers.replies``), or for a
job still open (timeout) its job_id, what the ledger says and why. Exit codes: 0 succeeded,
1 failed / rejected / expired, 3 no result in time, 4 refused before sending (invalid job,
back-pressure), 5 no such job in the ledger.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

from agentq.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_TIMEOUT, EXIT_REFUSED, EXIT_UNKNOWN = 0, 1, 3, 4, 5
TERMINAL = ("succeeded", "failed", "rejected", "expired")


def register(sub: Any) -> None:
    p = sub.add_parser("submit", help="submit one job, optionally wait for its result",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="e.g. minilm-l6, digits-mlp")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="input.text (text models)")
    what.add_argument("--pixels", help="input.pixels as a JSON array (digits-mlp: 64 numbers)")
    what.add_argument("--input", help="the whole input object as JSON")
    p.add_argument("--tenant")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--deadline-in-ms", type=int, help="deadline relative to now")
    p.add_argument("--job-id", help="default: a new UUID")
    p.add_argument("--reply-to", help="reply topic (with --wait default: "
                   "<AGENTQ_REPLY_TOPIC_PREFIX>cli, shared by CLI runs)")
    p.add_argument("--wait", action="store_true", help="wait for the result and print it")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    p.set_defaults(run=submit_command)

    r = sub.add_parser("result", help="print what the ledger holds for a job",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("job_id")
    r.add_argument("--wait", action="store_true", help="wait for a terminal state")
    r.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    r.set_defaults(run=result_command)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _exit_for(status: str) -> int:
    return EXIT_OK if status == "succeeded" else EXIT_FAILED


def job_from_args(args: argparse.Namespace) -> Any:
    from producers.contract import JobMessage

    if args.text is not None:
        inp: dict[str, Any] = {"text": args.text}
    elif args.pixels is not None:
        inp = {"pixels": json.loads(args.pixels)}
    else:
        inp = json.loads(args.input)
    deadline = int(time.time() * 1000) + args.deadline_in_ms if args.deadline_in_ms else None
    return JobMessage(job_id=args.job_id or str(uuid.uuid4()), model=args.model, input=inp,
                      priority=args.priority, deadline_ms=deadline, tenant=args.tenant,
                      reply_to=args.reply_to)


def submit_command(args: argparse.Namespace, settings: Settings) -> int:
    from producers.errors import ProducerError, ReplyTimeout

    try:
        job = job_from_args(args)
    except (ValueError, TypeError) as e:
        _emit({"status": "refused", "reason": "SCHEMA", "error": f"bad input: {e}"})
        return EXIT_REFUSED
    try:
        if not args.wait:
            return _send_only(settings, job)
        from producers.client import JobClient

        topic = args.reply_to or f"{settings.replies.topic_prefix}cli"
        with JobClient(settings, reply_topic=topic, db_url=settings.worker_database_url) as c:
            handle = c.submit(job)
            c.flush()
            try:
                res = handle.result(args.timeout)
            except ReplyTimeout as e:
                _emit({"job_id": job.job_id, "status": e.ledger_status or "unknown",
                       "reason": "TIMEOUT", "error": str(e)})
                return EXIT_TIMEOUT
        _emit(res.to_event())
        return _exit_for(res.status)
    except ProducerError as e:  # invalid job, back-pressure, Kafka refused it
        _emit({"job_id": job.job_id, "status": "refused", "reason": type(e).__name__,
               "error": str(e)})
        return EXIT_REFUSED


def _send_only(settings: Settings, job: Any) -> int:
    from producers.producer import JobProducer

    with JobProducer(settings.kafka, settings.limits) as producer:
        producer.send(job).get(timeout=30)
    _emit({"job_id": job.job_id, "status": "submitted", "reply_to": job.reply_to})
    return EXIT_OK


def result_command(args: argparse.Namespace, settings: Settings) -> int:
    from producers.replies import reply_event
    from storage.db import connection, make_engine
    from storage.queries import job_report

    try:
        job_id = str(uuid.UUID(args.job_id))
    except ValueError:
        _emit({"job_id": args.job_id, "status": "unknown", "reason": "SCHEMA",
               "error": "job_id must be a UUID"})
        return EXIT_UNKNOWN
    db = make_engine(settings.worker_database_url, pool_size=1, app_name="agentq-result")
    end = time.monotonic() + (args.timeout if args.wait else 0.0)
    try:
        while True:
            with connection(db) as conn:
                row = job_report(conn, job_id)
            if row is not None and row["status"] in TERMINAL:
                break
            if time.monotonic() >= end:
                break
            time.sleep(0.2)
    finally:
        db.dispose()
    if row is None:
        _emit({"job_id": job_id, "status": "unknown", "reason": None,
               "error": "the ledger has no row for this job"})
        return EXIT_UNKNOWN
    event = reply_event(row)
    event["reply"] = {"topic": row["reply_to"], "sent_at": row["reply_sent_at"].isoformat()
                      if row["reply_sent_at"] else None}
    _emit(event)
    if row["status"] not in TERMINAL:
        return EXIT_TIMEOUT
    return _exit_for(row["status"])
