"""PostgreSQL CPU per job for each ledger write, and what schema changes would save.

The stage budget (``bench.stage_budget``) finds PostgreSQL the largest consumer of the pipeline
(≈ 220–280 µs of CPU per digits job). This splits that number by statement: a digits-shaped job
(64-float jsonb input, 10 probabilities) goes through the ledger's own functions as the bridge and
the worker call them — ``queue_jobs`` (the queued insert), ``claim_batch`` (one ``batches`` row
per batch: its jobs are running under it), ``finish_jobs`` (→ succeeded plus the results insert)
— in batches of 256, and the CPU of
every PostgreSQL process (backends, WAL writer, checkpointer) is read from ``/proc`` around each
phase. Each variant runs on scratch copies of ``jobs`` and ``results`` (``CREATE TABLE … (LIKE …
INCLUDING ALL)`` in a schema of its own, with the reply triggers, in the migrated database), then
altered:

* ``as migrated``: the schema as it ships;
* ``as migrated (per-job running: before 0009)``: the same schema, claimed the way it was
  before migration 0009 — an UPDATE of every job to ``running`` — the baseline of the per-batch
  claim;
* ``input out of line``: the jsonb input stored in the TOAST table (``STORAGE EXTERNAL``,
  ``toast_tuple_target = 128``), so the two UPDATEs copy a short row and the input's pointer;
* ``live-only status index``: the (status, updated_at) index replaced by one on updated_at over
  queued/running rows only (what the reaper reads), so a terminal row leaves it;
* ``partial tenant/finished indexes``: the tenant index over rows with a tenant, the (model,
  finished_at) index over finished rows (migration 0008).

    python -m bench.ledger_cost --jobs 30000

Writes ``bench/results/ledger-cost.json``. Timings vary with the machine; the shares are what to
read. The scratch schema is dropped at the end; the ledger's own tables are not touched.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from agentq.config import Settings
from bench.stage_budget import by_cmdline, cpu_s
from storage.batches import Hold, claim_batch
from storage.ledger import finish_jobs, queue_jobs

RESULTS = Path(__file__).parent / "results"
BATCH = 256
SCRATCH = "agentq_ledger_cost"  # a schema
COPY_TABLES = [
    f"CREATE SCHEMA {SCRATCH}",
    f"CREATE TABLE {SCRATCH}.jobs (LIKE public.jobs INCLUDING ALL)",
    f"CREATE TABLE {SCRATCH}.results (LIKE public.results INCLUDING ALL)",
    f"CREATE TABLE {SCRATCH}.batches (LIKE public.batches INCLUDING ALL)",
    f"ALTER TABLE {SCRATCH}.results ADD FOREIGN KEY (job_id) REFERENCES {SCRATCH}.jobs",
    f"CREATE TRIGGER r_ins AFTER INSERT ON {SCRATCH}.jobs FOR EACH ROW "
    "WHEN (NEW.reply_to IS NOT NULL AND NEW.status IN ('succeeded', 'failed', 'rejected', "
    "'expired')) EXECUTE FUNCTION public.agentq_queue_reply()",
    f"CREATE TRIGGER r_upd AFTER UPDATE OF status ON {SCRATCH}.jobs FOR EACH ROW "
    "WHEN (NEW.reply_to IS NOT NULL AND NEW.status IN ('succeeded', 'failed', 'rejected', "
    "'expired') AND OLD.status NOT IN ('succeeded', 'failed', 'rejected', 'expired')) "
    "EXECUTE FUNCTION public.agentq_queue_reply()",
]

# The claim before migration 0009, kept here as the baseline of the per-batch claim: every job of
# the batch moved to ``running`` by an UPDATE of its row (a second heap tuple, an entry in every
# index). A variant whose name ends in this suffix claims that way; finish then fences on leases.
PER_JOB = " (per-job running: before 0009)"
CLAIM_PER_JOB = text(
    "WITH prev AS (SELECT job_id, status AS was FROM jobs "
    "  WHERE job_id = ANY(CAST(:ids AS uuid[])) AND status IN ('queued', 'running') "
    "  FOR UPDATE) "
    "UPDATE jobs AS j SET status = 'running', started_at = :t, updated_at = now(), "
    "  lease = j.lease + 1, "
    "  attempts = j.attempts + CASE WHEN prev.was = 'queued' THEN 1 ELSE 0 END "
    "FROM prev WHERE j.job_id = prev.job_id RETURNING j.job_id::text, j.lease")

VARIANTS: dict[str, list[str]] = {
    "as migrated": [],
    f"as migrated{PER_JOB}": [],
    "input out of line": [
        "ALTER TABLE jobs ALTER COLUMN input SET STORAGE EXTERNAL",
        "ALTER TABLE jobs SET (toast_tuple_target = 128)",
    ],
    "live-only status index": [
        # LIKE … INCLUDING ALL renames the copied indexes: find the copy by its columns
        "DO $$ DECLARE i text; BEGIN SELECT indexname INTO STRICT i FROM pg_indexes "
        f"WHERE schemaname = '{SCRATCH}' AND tablename = 'jobs' "
        "AND indexdef LIKE '%(status, updated_at)'; "
        f"EXECUTE format('DROP INDEX %I.%I', '{SCRATCH}', i); END $$",
        "CREATE INDEX jobs_live_updated_idx ON jobs (updated_at) "
        "WHERE status IN ('queued', 'running')",
    ],
    # Migration 0008: rows without a tenant leave the tenant index, unfinished rows the
    # (model, finished_at) index: two index entries fewer at the insert and at the claim.
    "partial tenant/finished indexes": [
        *(f"DO $$ DECLARE i text; BEGIN SELECT indexname INTO STRICT i FROM pg_indexes "
          f"WHERE schemaname = '{SCRATCH}' AND tablename = 'jobs' "
          f"AND indexdef LIKE '%({cols})'; "
          f"EXECUTE format('DROP INDEX %I.%I', '{SCRATCH}', i); END $$"
          for cols in ("tenant", "model, finished_at")),
        "CREATE INDEX jobs_tenant_set_idx ON jobs (tenant) WHERE tenant IS NOT NULL",
        "CREATE INDEX jobs_model_finished_set_idx ON jobs (model, finished_at) "
        "WHERE finished_at IS NOT NULL",
    ],
}


def _rows(n: int, rng: random.Random) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [{"job_id": str(uuid.uuid4()), "model": "digits-mlp", "tenant": f"t{i % 7}",
             "input": {"pixels": [float(rng.randint(0, 16)) for _ in range(64)]},
             "queue": "agentq.cpu", "batch_id": f"b{i // BATCH}",
             "source_topic": "agentq.jobs", "source_partition": i % 4, "source_offset": i,
             "produced_at": now, "received_at": now, "queued_at": now} for i in range(n)]


def _pg_cpu() -> float:
    return sum(cpu_s(p) for p in by_cmdline(r"^postgres"))


def _phase(label: str, batches: list[list[dict[str, Any]]],
           step: Callable[[Any, list[dict[str, Any]]], None], engine: Any) -> dict[str, float]:
    jobs = sum(len(b) for b in batches)
    c0, p0, t0 = _pg_cpu(), time.process_time(), time.perf_counter()
    for batch in batches:
        with engine.begin() as conn:
            step(conn, batch)
    wall, cpu = time.perf_counter() - t0, _pg_cpu() - c0
    client = time.process_time() - p0  # the caller's side: building and binding the statement
    print(f"  {label:<8} {cpu / jobs * 1e6:7.1f} µs PostgreSQL CPU/job  "
          f"{client / jobs * 1e6:7.1f} µs client CPU/job  {jobs / wall:9,.0f} jobs/s",
          file=sys.stderr)
    return {"pg_cpu_us_per_job": round(cpu / jobs * 1e6, 1),
            "client_cpu_us_per_job": round(client / jobs * 1e6, 1),
            "jobs_per_s": round(jobs / wall)}


def measure(url: str, name: str, jobs: int, seed: int = 7) -> dict[str, Any]:
    ddl = VARIANTS[name]
    _drop(url)
    engine = create_engine(url, pool_size=1,
                           connect_args={"options": f"-c search_path={SCRATCH},public"})
    with engine.begin() as conn:
        for stmt in COPY_TABLES + ddl:
            conn.execute(text(stmt))
    with engine.connect() as conn:  # the ledger's SQL must land in the copies, never in public
        here = conn.execute(text(f"SELECT to_regclass('jobs') = to_regclass('{SCRATCH}.jobs') "
                                 f"AND to_regclass('results') = to_regclass('{SCRATCH}.results')"))
        assert here.scalar_one(), "the scratch tables are not first on the search path"
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))  # not mid-run, where it can be helped
    except Exception:  # needs pg_checkpoint: the run is only noisier without it
        pass
    rows = _rows(jobs, random.Random(seed))
    batches = [rows[i:i + BATCH] for i in range(0, len(rows), BATCH)]
    leases: dict[str, int] = {}
    holds: dict[str, Hold | None] = {}
    per_job = name.endswith(PER_JOB)

    def claim(conn: Any, batch: list[dict[str, Any]]) -> None:
        ids, now = [r["job_id"] for r in batch], datetime.now(UTC)
        if per_job:
            got = conn.execute(CLAIM_PER_JOB, {"ids": ids, "t": now})
            leases.update({j: int(lease) for j, lease in got})
            holds[batch[0]["batch_id"]] = None
            return
        claims = claim_batch(conn, batch[0]["batch_id"], "digits-mlp", ids, now)
        leases.update({j: c.lease for j, c in claims.items()})
        holds[batch[0]["batch_id"]] = claims[ids[0]].hold

    def finish(conn: Any, batch: list[dict[str, Any]]) -> None:
        finish_jobs(conn, [{"job_id": r["job_id"], "lease": leases[r["job_id"]],
                            "model": "digits-mlp", "label": 3,
                            "probs": [0.1] * 10} for r in batch], datetime.now(UTC),
                    holds[batch[0]["batch_id"]])

    try:
        phases = {"insert": _phase("insert", batches, lambda c, b: queue_jobs(c, b), engine),
                  "claim": _phase("claim", batches, claim, engine),
                  "finish": _phase("finish", batches, finish, engine)}
        with engine.connect() as conn:
            size = conn.execute(text("SELECT pg_total_relation_size('jobs')")).scalar_one()
    finally:
        engine.dispose()
    total = sum(p["pg_cpu_us_per_job"] for p in phases.values())
    return {"phases": phases, "pg_cpu_us_per_job": round(total, 1),
            "jobs_table_bytes_per_job": round(size / jobs)}


def _drop(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {SCRATCH} CASCADE"))
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ledger_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=30_000)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", type=Path, default=RESULTS / "ledger-cost.json")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    url = settings.database_url  # the owner: it may create a schema; the worker role may not
    report: dict[str, Any] = {"jobs": args.jobs, "batch": BATCH, "variants": {}}
    with open("/proc/loadavg") as f:
        report["load_start"] = f.read().split()[0]
    for name in args.variants.split(","):
        print(f"{name}:", file=sys.stderr)
        try:
            report["variants"][name] = measure(url, name, args.jobs)
        finally:
            _drop(url)
    with open("/proc/loadavg") as f:
        report["load_end"] = f.read().split()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["variants"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
