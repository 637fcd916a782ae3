"""The celery-batches baseline of `agentq bench e2e` (bench/peers.py) on a real Celery worker,
Redis and PostgreSQL: every job gets exactly one result row, the model's own answer."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sqlalchemy import text

from bench.workload import make_jobs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

N_JOBS = 600  # two full flushes of 256 and a remainder that only the flush timer sends


def test_celery_batches_baseline_writes_one_row_per_job(built_models, owner_db, tmp_path):
    pytest.importorskip("celery_batches")  # the bench extra
    import onnxruntime as ort

    from bench.peers import FLUSH_EVERY, celery_batches_baseline, fp32_model

    jobs = make_jobs("digits-mlp", N_JOBS, seed=3)
    res = celery_batches_baseline(built_models, owner_db, "digits-mlp", jobs, workers=2,
                                  log_dir=tmp_path, timeout_s=150, drop=False)
    table = res["table"]
    try:
        with owner_db.connect() as conn:
            rows = conn.execute(text(f"SELECT job_id::text, label, probs, error, flush_at "
                                     f"FROM {table}")).all()
    finally:
        with owner_db.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    assert res["jobs"] == res["rows"] == N_JOBS and res["errors"] == 0, res
    assert res["variant"] == "fp32" and res["jobs_per_s"] > 0
    per_job = Counter(r.job_id for r in rows)
    assert set(per_job) == {j.job_id for j in jobs}
    assert set(per_job.values()) == {1}
    # One COPY per flush, of at most flush_every rows (how many is up to the flush timer).
    per_flush = Counter(r.flush_at for r in rows)
    assert res["flushes"] == len(per_flush) and max(per_flush.values()) <= FLUSH_EVERY
    # Each row is its own job's answer from the fp32 model (no mix-up inside a batch).
    path, _ = fp32_model(built_models, owner_db, "digits-mlp")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.asarray([j.input["pixels"] for j in jobs], dtype=np.float32)
    want = dict(zip([j.job_id for j in jobs], sess.run(None, {sess.get_inputs()[0].name: x})[0],
                    strict=True))
    for r in rows:
        assert r.error is None
        assert r.label == int(np.argmax(want[r.job_id]))
        np.testing.assert_allclose(r.probs, want[r.job_id], rtol=1e-4, atol=1e-5)
