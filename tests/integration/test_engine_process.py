"""The per-device engine process on live services: same outputs as in-process sessions, merged
batches, slots of killed clients reclaimed, and an engine killed mid-stream loses no job."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from agentq.config import EngineOptions, Settings
from engine.client import EngineClient
from engine.slab import SHM_DIR, read_header
from producers.contract import JobMessage
from producers.producer import JobProducer
from tests.support import ledger_status, require, wait_for, wait_terminal

pytestmark = pytest.mark.integration


@pytest.fixture
def engine_opts(tmp_path: Path) -> EngineOptions:
    return EngineOptions(run_dir=tmp_path / "run", watch_pid=os.getpid(), n_slots=8,
                         slot_bytes=1 << 20)


@pytest.fixture
def client(built_models: Settings, engine_opts: EngineOptions):
    c = EngineClient(built_models.worker, engine_opts)
    assert c.wait_ready(60), "engine did not start"
    yield c
    pid = c.engine_pid
    c.close()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not (engine_opts.run_dir / "engine.pid").exists(), 20, what="engine exit")


@pytest.mark.timeout(120)
def test_engine_outputs_equal_in_process_outputs_bit_for_bit(built_models, worker_db, client):
    from engine.sessions import InferenceEngine

    local = InferenceEngine(built_models.worker, worker_db)
    x = load_digits().data.astype(np.float32)
    for n in (1, 7, 64, 300):  # 300 rows: larger than a device batch, one request
        want = local.run("digits-mlp", {"pixels": x[:n]})
        got = client.run("digits-mlp", {"pixels": x[:n]})
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert g.tobytes() == w.tobytes()
    assert client.device == local.device == "cpu"


def _minilm_or_skip(worker_db) -> None:
    from storage.registry import registered_names

    with worker_db.connect() as conn:
        if "minilm-l6" not in registered_names(conn):
            require(False, "minilm-l6 is not registered (agentq models build minilm-l6)")


def _texts(n: int, words: int) -> list[dict]:
    base = "agents send short jobs to a queue and read the embeddings back from postgres".split()
    return [{"text": " ".join(base[(i + k) % len(base)] for k in range(words))} for i in range(n)]


@pytest.mark.timeout(180)
def test_minilm_through_the_engine_equals_in_process_for_the_same_batch(
        built_models, worker_db, client):
    # Dynamic int8 activation scales are per batch: compare identical batches only.
    from engine.sessions import InferenceEngine
    from models.catalog import CATALOG

    _minilm_or_skip(worker_db)
    local = InferenceEngine(built_models.worker, worker_db)
    handler = CATALOG["minilm-l6"].make_handler(None)
    for n, words in ((1, 5), (16, 12), (64, 30)):
        feeds = handler.prepare(_texts(n, words)).feeds
        want = local.run("minilm-l6", feeds)
        got = client.run("minilm-l6", feeds)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert g.tobytes() == w.tobytes()


def _text_client(settings, opts, words, rounds, results, errors):
    from models.catalog import CATALOG

    try:
        c = EngineClient(settings.worker, opts)
        feeds = CATALOG["minilm-l6"].make_handler(None).prepare(_texts(4, words)).feeds
        for _ in range(rounds):
            results.append((words, feeds, c.run("minilm-l6", feeds)))
        c.close()
    except Exception as e:  # surfaced by the test thread
        errors.append(e)


@pytest.mark.timeout(180)
def test_requests_of_different_sequence_lengths_are_not_merged(
        built_models, worker_db, client, engine_opts):
    # Given clients sending token batches of different padded lengths at once,
    _minilm_or_skip(worker_db)
    results: list = []
    errors: list = []
    threads = [threading.Thread(target=_text_client, args=(built_models, engine_opts,
                                                           3 + 4 * (i % 3), 15, results, errors))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    # then every request succeeds with embeddings of its own rows (no merged batch failed over
    # mismatched shapes), and any merged batch held one sequence length only.
    assert not errors, errors
    assert len(results) == 6 * 15
    for _, _, outs in results:
        assert outs[0].shape == (4, 384)
        assert np.allclose(np.linalg.norm(outs[0], axis=1), 1, atol=1e-3)
    by_len: dict = {}
    for words, _, outs in results:
        by_len.setdefault(words, []).append(outs[0])
    for outs in by_len.values():  # same rows, same length: close whatever they merged with
        for o in outs[1:]:
            np.testing.assert_allclose(o, outs[0], atol=0.05)
    assert client.stats()["merge_failures"] == 0


def _client_loop(settings, opts, rows, rounds, results, errors):
    try:
        c = EngineClient(settings.worker, opts)
        for _ in range(rounds):
            results.append((rows, c.run("digits-mlp", {"pixels": rows})))
        c.close()
    except Exception as e:  # surfaced by the test thread
        errors.append(e)


@pytest.mark.timeout(120)
def test_concurrent_requests_are_merged_and_each_caller_gets_its_slice(
        built_models, worker_db, client, engine_opts):
    from engine.sessions import InferenceEngine

    # Given six clients sending small batches at once,
    local = InferenceEngine(built_models.worker, worker_db)
    x = load_digits().data.astype(np.float32)
    results: list = []
    errors: list = []
    threads = [threading.Thread(target=_client_loop, args=(built_models, engine_opts,
                                                           x[8 * i:8 * i + 3 + i], 40,
                                                           results, errors))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    # then every caller got the outputs of its own rows,
    assert not errors, errors
    assert len(results) == 6 * 40
    for rows, outs in results:
        want = local.run("digits-mlp", {"pixels": rows})[0]
        np.testing.assert_allclose(outs[0], want, rtol=1e-6, atol=1e-7)
        assert (outs[0].argmax(1) == want.argmax(1)).all()
    # and the engine merged some of them into shared device batches.
    stats = client.stats()
    assert stats["merged"] > 0, stats
    assert stats["slots_used"] == 0


def _hold_engine_slot(settings, opts, ready):
    c = EngineClient(settings.worker, opts)
    c.wait_ready(60)
    c._slab.alloc()  # a request half written when the process dies
    ready.set()
    signal.pause()


@pytest.mark.timeout(120)
def test_pool_process_killed_holding_a_slot_leaks_nothing(built_models, client, engine_opts):
    # Given a client process that dies with SIGKILL while it holds a slot,
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_hold_engine_slot, args=(built_models, engine_opts, ready))
    child.start()
    try:
        assert ready.wait(60)
        assert client.stats()["slots_used"] == 1
        os.kill(child.pid, signal.SIGKILL)
        # then the engine reclaims the slot on its own,
        wait_for(lambda: client.stats()["slots_used"] == 0, 10, what="slot reclaim")
    finally:
        child.join(10)
    # and the engine still serves.
    assert client.run("digits-mlp", {"pixels": np.zeros((2, 64), np.float32)})[0].shape == (2, 10)


def _engine_pid(worker_pid: int) -> int | None:
    path = Path(tempfile.gettempdir()) / f"agentq-engine-{worker_pid}" / "engine.pid"
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(280)
def test_killing_the_engine_mid_stream_loses_no_job(stack, worker_db):
    # Given a bridge and a Celery worker (2 pool processes) in shared-engine mode,
    s = stack.settings
    worker = stack.worker(concurrency=2, extra_env={"AGENTQ_WORKER_ENGINE_MODE": "shared"})
    stack.bridge()
    first = wait_for(lambda: _engine_pid(worker.popen.pid), 90, what="engine process")
    digits = load_digits()
    jobs = [JobMessage.new("digits-mlp", {"pixels": digits.data[i % 1797].tolist()})
            for i in range(600)]
    with JobProducer(s.kafka, s.limits) as producer:
        # when jobs stream in and the engine is killed with SIGKILL while they run,
        for job in jobs[:300]:
            producer.send(job)
        producer.flush()
        ids = [j.job_id for j in jobs[:300]]
        wait_for(lambda: list(ledger_status(worker_db, ids).values()).count("succeeded") >= 20,
                 90, interval_s=0.05, what="jobs running")
        old_slabs = [p for p in SHM_DIR.glob("agentq-*") if (read_header(p) or (0,))[0] == first]
        os.kill(first, signal.SIGKILL)
        for job in jobs[300:]:
            producer.send(job)
            time.sleep(0.001)
        producer.flush()
    # then every job still ends succeeded, exactly once,
    statuses = wait_terminal(worker_db, [j.job_id for j in jobs], timeout_s=180)
    assert set(statuses.values()) == {"succeeded"}, stack.logs()
    # a new engine serves (restarted by a pool process), the worker itself never died,
    second = _engine_pid(worker.popen.pid)
    assert second and second != first, stack.logs()
    assert worker.alive(), stack.logs()
    # and the killed engine's slab was removed when its successor started.
    assert old_slabs and not any(p.exists() for p in old_slabs)


@pytest.mark.gpu
@pytest.mark.timeout(240)
def test_fp16_model_runs_through_the_engine_on_cuda_with_io_binding(built_models, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA provider (onnxruntime-gpu and a GPU are needed)")
    from dataclasses import replace

    settings = replace(built_models.worker, device="cuda")
    c = EngineClient(settings, EngineOptions(run_dir=tmp_path / "gpu", watch_pid=os.getpid()))
    try:
        assert c.wait_ready(120) and c.device == "cuda"
        x = load_digits().data.astype(np.float32)[:64]
        probs = c.run("digits-mlp", {"pixels": x})[0]
        assert probs.shape == (64, 10) and np.allclose(probs.sum(1), 1, atol=1e-2)
    finally:
        pid = c.engine_pid
        c.close()
        if pid:
            os.kill(pid, signal.SIGTERM)
