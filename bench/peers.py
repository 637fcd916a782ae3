"""The celery-batches baseline: what a Celery user who wants batching writes.

One task message per job, a ``celery_batches.Batches`` task (``flush_every=256``,
``flush_interval=0.05``, the worker's prefetch unlimited as celery-batches asks), ONNX Runtime on
the model's fp32 variant (one intra-op thread per process, like the agentq workers), one ``COPY``
per flush into a table of this run. No Kafka, no ledger, JSON messages. ``bench.e2e`` runs it
beside the naive baseline, on the same jobs:
``celery -A bench.peers worker -Q <queue> -c N -P prefork``.

Worker environment: ``AGENTQ_PEER_BROKER`` (the Celery broker), ``AGENTQ_PEER_DATABASE_URL``
(owner role: the bench creates the table), ``AGENTQ_PEER_TABLE``, ``AGENTQ_PEER_MODEL`` and
``AGENTQ_PEER_MODEL_PATH`` (the ``.onnx`` file; its folder holds the build's tokenizer).

Throughput is the drain of a pre-loaded queue, as for naive: from the start of the first flush to
the last result row (database timestamps), so worker start-up and model loading are not counted.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Celery, signals
from celery_batches import Batches

if TYPE_CHECKING:
    from celery_batches import SimpleRequest
    from sqlalchemy import Engine

    from agentq.config import Settings
    from producers.contract import JobMessage

FLUSH_EVERY = 256
FLUSH_INTERVAL_S = 0.05
TASK = "peers.celery_batches.infer"

app = Celery("agentq-peers", broker=os.environ.get("AGENTQ_PEER_BROKER",
                                                   "redis://127.0.0.1:16379/0"))
# JSON only; prefetch 0 (unlimited): a Batches task buffers what the worker has reserved, so a
# bounded prefetch caps the batch (celery-batches' README).
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"],
                task_ignore_result=True, task_acks_late=True, worker_prefetch_multiplier=0,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

_state: dict[str, Any] = {}


def _session() -> Any:
    """The fp32 ONNX Runtime session and the model's own input handler, once per process."""
    if "session" not in _state:
        from bench.models_bench import cpu_session
        from models.catalog import spec

        path = Path(os.environ["AGENTQ_PEER_MODEL_PATH"])
        sess = cpu_session(path, 1)
        _state["session"] = sess
        _state["inputs"] = [i.name for i in sess.get_inputs()]
        _state["handler"] = spec(os.environ["AGENTQ_PEER_MODEL"]).make_handler(path.parent)
    return _state["session"]


def _conn() -> Any:
    conn = _state.get("conn")
    if conn is None:
        import psycopg

        url = os.environ["AGENTQ_PEER_DATABASE_URL"].replace("postgresql+psycopg://",
                                                             "postgresql://")
        conn = _state["conn"] = psycopg.connect(url, autocommit=True)
    return conn


@signals.worker_process_init.connect
def _warm(**_: Any) -> None:
    if os.environ.get("AGENTQ_PEER_MODEL_PATH"):
        _session()
        _conn()


COLUMNS = "(job_id, model, label, probs, embedding, error, flush_at)"


@app.task(base=Batches, name=TASK, flush_every=FLUSH_EVERY, flush_interval=FLUSH_INTERVAL_S)
def infer(requests: list[SimpleRequest]) -> None:
    """One flush: every request's ``(job_id, model, input)``, one run, one ``COPY``."""
    import numpy as np

    flush_at = datetime.now(UTC)
    sess = _session()
    handler = _state["handler"]
    args = [r.args for r in requests]
    prepared = handler.prepare([a[2] for a in args])
    feeds = dict(prepared.feeds)
    if "token_type_ids" in _state["inputs"] and "token_type_ids" not in feeds:
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    feeds = {k: v for k, v in feeds.items() if k in _state["inputs"]}
    results = handler.results(sess.run(None, feeds), prepared) if prepared.ok else []
    rows: list[tuple[Any, ...]] = []
    for k, i in enumerate(prepared.ok):
        r = results[k]
        rows.append((args[i][0], args[i][1], r.get("label"), r.get("probs"), r.get("embedding"),
                     None, flush_at))
    for i, err in prepared.errors.items():
        rows.append((args[i][0], args[i][1], None, None, None, err, flush_at))
    table = os.environ["AGENTQ_PEER_TABLE"]
    with _conn().cursor() as cur, cur.copy(f"COPY {table} {COLUMNS} FROM STDIN") as copy:
        copy.set_types(["text", "text", "int2", "float4[]", "float4[]", "text", "timestamptz"])
        for row in rows:
            copy.write_row(row)


# -- the bench side ----------------------------------------------------------------------------
def fp32_model(settings: Settings, owner: Engine, model: str) -> tuple[Path, str]:
    """The fp32 cpu file of the model's active cpu version (the active variant where the
    version has no fp32 one) and the variant's name."""
    from sqlalchemy import text

    from bench.models_bench import registry_file
    from storage.registry import active_variant

    with owner.connect() as conn:
        active = active_variant(conn, model, "cpu")
        row = conn.execute(text("SELECT path, variant FROM models WHERE name = :n AND "
                                "version = :v AND device = 'cpu' AND variant = 'fp32'"),
                           {"n": model, "v": active["version"]}).mappings().first()
    chosen: Any = row or active
    return registry_file(settings, chosen["path"]), chosen["variant"]


def celery_batches_baseline(settings: Settings, owner: Engine, model: str,
                            jobs: list[JobMessage], workers: int, log_dir: Path,
                            timeout_s: float, drop: bool = True) -> dict[str, Any]:
    """Pre-load one task message per job, start a real worker, time its drain.

    ``drop=False`` keeps the results table and names it under ``"table"`` (the test reads it).
    """
    import redis
    from sqlalchemy import text

    from bench.workload import progress, scalar, wait
    from ops.stack import Stack

    path, variant = fp32_model(settings, owner, model)
    tag = uuid.uuid4().hex[:8]
    table, queue = f"bench_peer_{tag}", f"bench.peer.{tag}"
    with owner.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (job_id uuid NOT NULL, model text, "
                          "label smallint, probs real[], embedding real[], error text, "
                          "flush_at timestamptz NOT NULL, "
                          "created_at timestamptz NOT NULL DEFAULT clock_timestamp())"))
    stack = Stack(env={"AGENTQ_PEER_BROKER": settings.redis_url,
                       "AGENTQ_PEER_DATABASE_URL": settings.database_url,
                       "AGENTQ_PEER_TABLE": table, "AGENTQ_PEER_MODEL": model,
                       "AGENTQ_PEER_MODEL_PATH": str(path)}, log_dir=log_dir)
    try:
        app.conf.broker_url = settings.redis_url
        t0 = time.perf_counter()
        with app.producer_or_acquire() as producer:  # pre-load the queue
            for j in progress(jobs, f"celery-batches {model}: queue tasks"):
                infer.apply_async(args=[j.job_id, model, j.input], queue=queue,
                                  producer=producer)
        publish_s = time.perf_counter() - t0
        stack.start("celery-batches", [
            sys.executable, "-m", "celery", "-A", "bench.peers", "worker", "-Q", queue,
            "-c", str(workers), "-P", "prefork", "--prefetch-multiplier", "0",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", f"peer-{tag}@%h", "-l", "WARNING"], {"C_FORCE_ROOT": "1"})
        done_sql = text(f"SELECT count(DISTINCT job_id) FROM {table}")
        wait(lambda: scalar(owner, done_sql), len(jobs), f"celery-batches {model}: drain",
              timeout_s, stack)
        with owner.connect() as conn:
            d = conn.execute(text(
                f"SELECT count(*) AS rows, count(DISTINCT job_id) AS jobs, "
                f"count(DISTINCT flush_at) AS flushes, count(error) AS errors, "
                f"extract(epoch FROM max(created_at) - min(flush_at)) AS span_s "
                f"FROM {table}")).one()
    finally:
        stack.stop_all()
        redis.Redis.from_url(settings.redis_url).delete(queue)
        if drop:
            with owner.begin() as conn:
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    span = max(float(d.span_s), 1e-6)
    out: dict[str, Any] = {
        "jobs": d.jobs, "rows": d.rows, "errors": d.errors, "elapsed_s": round(span, 3),
        "jobs_per_s": round(d.jobs / span, 1), "workers": workers, "variant": variant,
        "flushes": d.flushes, "avg_batch": round(d.jobs / max(1, d.flushes), 1),
        "flush_every": FLUSH_EVERY, "flush_interval_s": FLUSH_INTERVAL_S,
        "publish_s": round(publish_s, 3)}
    if not drop:
        out["table"] = table
    return out


def main(argv: list[str] | None = None) -> int:
    """Only this baseline, on the e2e's jobs: ``python -m bench.peers --jobs 20000``."""
    import argparse
    import json
    import tempfile

    from agentq.config import Settings
    from bench.workload import make_jobs
    from storage.db import make_engine

    p = argparse.ArgumentParser(prog="python -m bench.peers", description=main.__doc__)
    p.add_argument("--model", default="digits-mlp")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=900)
    args = p.parse_args(argv)
    settings = Settings.from_env()
    owner = make_engine(settings.database_url, pool_size=1, app_name="agentq-bench-peers")
    try:
        res = celery_batches_baseline(settings, owner, args.model,
                                      make_jobs(args.model, args.jobs, args.seed), args.workers,
                                      Path(tempfile.mkdtemp(prefix="agentq-peers-")),
                                      args.timeout_s)
    finally:
        owner.dispose()
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
