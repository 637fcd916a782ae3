"""The naive baseline a user writes first: one Celery task per job, the PyTorch fp32 model, one
INSERT per result. Run by ``bench.e2e`` as
``celery -A bench.naive_tasks worker -Q $AGENTQ_NAIVE_QUEUE -c N``.

Environment: ``AGENTQ_REDIS_URL`` (broker), ``AGENTQ_DATABASE_URL`` (owner role: the bench
creates the table), ``AGENTQ_NAIVE_TABLE`` (results table of this run). Torch uses one thread per
process, like the agentq workers' ONNX Runtime sessions.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

app = Celery("agentq-naive", broker=os.environ.get("AGENTQ_REDIS_URL", "redis://127.0.0.1:16379/0"))
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                task_acks_late=True, worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)

_state: dict[str, Any] = {}


def _load(model: str) -> Any:
    import torch

    torch.set_num_threads(1)
    if model == "digits-mlp":
        from models import digits

        return digits.train(digits.load_data())
    from models import minilm
    from models.tokenizer import TextTokenizer, package_model_dir

    _state["tokenizer"] = TextTokenizer.from_dir(package_model_dir())
    return minilm.load_model(package_model_dir())


def _conn() -> Any:
    conn = _state.get("conn")
    if conn is None:
        import psycopg

        url = os.environ["AGENTQ_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        conn = _state["conn"] = psycopg.connect(url, autocommit=True)
    return conn


@signals.worker_process_init.connect
def _warm(**_: Any) -> None:
    model = os.environ.get("AGENTQ_NAIVE_MODEL")
    if model:
        _state[model] = _load(model)
    _conn()


@app.task(name="naive.infer")
def infer(job_id: str, model: str, inp: dict[str, Any]) -> None:
    import numpy as np
    import torch

    net = _state.get(model)
    if net is None:
        net = _state[model] = _load(model)
    table = os.environ["AGENTQ_NAIVE_TABLE"]
    with torch.inference_mode():
        if model == "digits-mlp":
            probs = net(torch.tensor([inp["pixels"]], dtype=torch.float32))[0].numpy()
            row: tuple[Any, ...] = (job_id, model, int(np.argmax(probs)), probs.tolist(), None)
        else:
            enc = _state["tokenizer"].encode([inp["text"]])
            emb = net(torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask))
            row = (job_id, model, None, None, emb[0].numpy().tolist())
    _conn().execute(
        f"INSERT INTO {table} (job_id, model, label, probs, embedding) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (job_id) DO NOTHING", row)
