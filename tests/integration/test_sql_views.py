"""The SQL views of migration 0002 and every query of docs/sql-cookbook.md, on live Postgres."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from storage.ledger import insert_jobs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

COOKBOOK = Path(__file__).resolve().parents[2] / "docs" / "sql-cookbook.md"
VIEWS = ("job_latency_per_minute", "model_throughput_per_minute", "job_status_counts",
         "failure_reasons", "job_state")


def cookbook_queries() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", COOKBOOK.read_text(), flags=re.S)
    return [b.strip() for b in blocks]


def bindable(sql: str) -> str:
    """psql's quoted variables (:'name') become SQLAlchemy binds (:name)."""
    return re.sub(r":'(\w+)'", r":\1", sql)


def unit(vec: list[float]) -> list[float]:
    n = sum(x * x for x in vec) ** 0.5
    return [x / n for x in vec]


@pytest.fixture
def sample(owner_db: Any):
    """Given: a unique tenant with three embedded texts, and a unique model with successes,
    a failure, a rejection and an expiry, all finished just now."""
    tenant = f"views-{uuid.uuid4().hex[:8]}"
    model = f"views-model-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    ids = {k: str(uuid.uuid4()) for k in ("query", "near", "far", "ok1", "ok2", "slow", "bad",
                                          "rej", "exp", "sad", "fast")}
    base = dict(tenant=tenant, priority=0, meta=None, queue="cpu", batch_id="b",
                source_topic="t", source_partition=0, source_offset=0, deadline_at=None,
                reason=None, error=None)

    def job(key: str, model_: str, status: str, latency_ms: float, **kw: Any) -> dict[str, Any]:
        produced = now - timedelta(milliseconds=latency_ms)
        return {**base, "job_id": ids[key], "model": model_, "status": status,
                "input": kw.pop("input", {"text": key}), "produced_at": produced,
                "received_at": produced, "queued_at": produced, "started_at": produced,
                "finished_at": now, **kw}

    rows = [
        job("query", "minilm-l6", "succeeded", 30),
        job("near", "minilm-l6", "succeeded", 30),
        job("far", "minilm-l6", "succeeded", 30),
        job("ok1", model, "succeeded", 10),
        job("ok2", model, "succeeded", 20),
        job("slow", model, "succeeded", 20 * 3600 * 1000.0),
        job("bad", model, "failed", 5, reason="INFERENCE_FAILED", error="boom"),
        job("rej", model, "rejected", 1, reason="SCHEMA", error="no"),
        job("exp", model, "expired", 1, reason="EXPIRED", error="late"),
        job("sad", "sentiment-minilm", "succeeded", 15, input={"text": "worst flight ever"}),
        job("fast", "minilm-l6-fast", "succeeded", 10, input={"text": "query"}),
    ]
    # Every row finishes now, so "today" filters (on finished_at) hold at any hour of the day:
    # the slow job's 20-hour latency never depends on the wall clock.
    embeddings = {"query": unit([1.0, 0.0, 0.2]), "near": unit([0.9, 0.1, 0.2]),
                  "far": unit([0.0, 1.0, 0.0]), "fast": unit([1.0, 0.05, 0.2])}
    extras = {"query": {"tokens": 5, "truncated": False}, "near": {"tokens": 5, "truncated": False},
              "far": {"tokens": 256, "truncated": True}, "fast": {"tokens": 3, "truncated": False}}
    with owner_db.begin() as conn:
        insert_jobs(conn, rows)
        for key, emb in embeddings.items():
            conn.execute(text("INSERT INTO results (job_id, model, embedding, extra) "
                              "VALUES (:j, :m, :e, CAST(:x AS jsonb))"),
                         {"j": ids[key], "e": emb, "x": json.dumps(extras[key]),
                          "m": "minilm-l6-fast" if key == "fast" else "minilm-l6"})
        conn.execute(text("INSERT INTO results (job_id, model, label, probs, extra) "
                          "VALUES (:j, 'sentiment-minilm', 0, :p, CAST(:x AS jsonb))"),
                     {"j": ids["sad"], "p": [0.97, 0.02, 0.01], "x": json.dumps(
                         {"label": "negative", "tokens": 6, "truncated": False})})
    yield {"tenant": tenant, "model": model, "ids": ids}
    with owner_db.begin() as conn:
        conn.execute(text("DELETE FROM results WHERE job_id = ANY(CAST(:ids AS uuid[]))"),
                     {"ids": list(ids.values())})
        conn.execute(text("DELETE FROM jobs WHERE job_id = ANY(CAST(:ids AS uuid[]))"),
                     {"ids": list(ids.values())})


def run(engine: Any, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(bindable(sql)), params)]


def test_views_and_cosine_are_readable_by_the_worker_role(worker_db: Any, sample: dict) -> None:
    for view in VIEWS:
        run(worker_db, f"SELECT * FROM {view} LIMIT 1")
    got = run(worker_db, "SELECT cosine_similarity(CAST(:a AS real[]), CAST(:b AS real[])) AS c",
              a=[1.0, 0.0], b=[1.0, 1.0])
    assert got[0]["c"] == pytest.approx(2 ** -0.5, rel=1e-6)


def test_views_aggregate_latency_throughput_status_and_failures(worker_db: Any,
                                                                sample: dict) -> None:
    m = sample["model"]
    lat = run(worker_db, "SELECT * FROM job_latency_per_minute WHERE model = :m", m=m)
    assert sum(r["jobs"] for r in lat) == 3  # successes only
    assert max(r["max_ms"] for r in lat) > 3600 * 1000
    thr = run(worker_db, "SELECT * FROM model_throughput_per_minute WHERE model = :m", m=m)
    assert sum(r["succeeded"] for r in thr) == 3
    assert sum(r["failed"] for r in thr) == 1 and sum(r["expired"] for r in thr) == 1
    counts = {r["status"]: r["jobs"] for r in
              run(worker_db, "SELECT * FROM job_status_counts WHERE model = :m", m=m)}
    assert counts == {"succeeded": 3, "failed": 1, "rejected": 1, "expired": 1}
    reasons = {(r["status"], r["reason"]): r["jobs"] for r in
               run(worker_db, "SELECT * FROM failure_reasons WHERE model = :m", m=m)}
    assert reasons == {("failed", "INFERENCE_FAILED"): 1, ("rejected", "SCHEMA"): 1,
                       ("expired", "EXPIRED"): 1}


def test_every_cookbook_query_runs_and_answers(worker_db: Any, sample: dict) -> None:
    queries = cookbook_queries()
    assert len(queries) >= 6
    ids, tenant, model = sample["ids"], sample["tenant"], sample["model"]
    answers = []
    for sql in queries:
        params = {k: v for k, v in {"job_id": ids["query"], "tenant": tenant}.items()
                  if f":'{k}'" in sql}
        answers.append((sql, run(worker_db, sql, **params)))
    by_start = {sql.split("\n")[0] + sql[-60:]: rows for sql, rows in answers}
    assert len(by_start) == len(answers)

    def find(fragment: str) -> list[dict[str, Any]]:
        hits = [rows for sql, rows in answers if fragment in sql]
        assert len(hits) == 1, fragment
        return hits[0]

    where = find("WHERE j.job_id = :'job_id';")
    assert [r["status"] for r in where] == ["succeeded"]
    slowest = find("date_trunc('day', now())")
    assert ids["slow"] in {str(r["job_id"]) for r in slowest}
    truncated = find("AS truncated")
    minilm = next(r for r in truncated if r["model"] == "minilm-l6")
    assert minilm["truncated"] >= 1 and minilm["jobs"] >= 3
    assert ids["far"] in {str(r["job_id"]) for r in find("(r.extra ->> 'truncated')::boolean\n")}
    sentiment = find("AS mean_confidence\nFROM results r\nJOIN jobs j USING (job_id)\n"
                     "WHERE j.model = 'sentiment-minilm'")
    assert {"tenant": tenant, "sentiment": "negative", "jobs": 1} in [
        {k: r[k] for k in ("tenant", "sentiment", "jobs")} for r in sentiment]
    assert ids["sad"] in {str(r["job_id"]) for r in find("AS p_negative")}
    failures = find("interval '1 hour'\nGROUP BY model, status, reason")
    assert {(r["status"], r["reason"]) for r in failures if r["model"] == model} == {
        ("failed", "INFERENCE_FAILED"), ("rejected", "SCHEMA"), ("expired", "EXPIRED")}
    pairs = find("AS pairs")
    assert pairs[0]["pairs"] >= 1 and pairs[0]["min_cosine"] is not None
    assert {r["variant"] for r in find("FROM models\nWHERE name = 'minilm-l6-fast'")} <= {
        "int8", "pruned", "pruned-int8", "distilled", "distilled-int8"}
    throughput = find("finished_at >= now() - interval '5 minutes'")
    assert {r["model"]: r["succeeded"] for r in throughput}[model] == 3
    latency = find("FROM job_latency_per_minute")
    assert model in {r["model"] for r in latency}
    states = find("FROM job_status_counts")
    assert {r["status"] for r in states if r["model"] == model} == {
        "succeeded", "failed", "rejected", "expired"}
    embeddings = find("JOIN results r USING (job_id)\nWHERE j.tenant")
    assert {str(r["job_id"]) for r in embeddings} == {ids["query"], ids["near"], ids["far"]}
    assert all(len(r["embedding"]) == 3 for r in embeddings)
    neighbours = find("cosine_similarity(r.embedding, q.embedding) DESC")
    assert [str(r["job_id"]) for r in neighbours] == [ids["near"], ids["far"]]
    assert float(neighbours[0]["cosine"]) > 0.95
