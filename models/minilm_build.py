"""Build steps for minilm-l6: export → fuse → int8 / fp16 → gate against PyTorch → pick default.

Variants written to the artifact directory (all take ``input_ids`` and ``attention_mask`` int64
and return ``embedding`` float32 (batch, 384), unit length):

* ``fp32``  — the legacy-exporter graph (``dynamo=False``, opset 17: the only export ONNX
  Runtime's BERT optimizer can fuse); ORT applies its own online optimisations at load;
* ``fused`` — fp32 after ``onnxruntime.transformers.optimizer`` (Attention, SkipLayerNorm, …);
* ``int8``  — dynamic int8, per-channel weights, quantized from the fused graph;
* ``fp16``  — fused for GPU and converted to fp16 (fp32 inputs/outputs kept), device ``cuda``.

Every CPU variant must pass the accuracy gate (models.minilm_eval) or the build fails; the
active CPU variant is the fastest one measured here (with the worker's thread count), provided it
beats the exact fp32 graph by 10%.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.artifacts import content_version, sha256_file
from models.errors import AccuracyGateFailed
from models.timing import best_times_ms, pick_active

NAME = "minilm-l6"
PARAMS: dict[str, Any] = {
    "opset": 17, "max_length": 128, "per_channel": True, "num_heads": 12, "hidden": 384,
    "eval_queries": 200, "timing_batch": 32, "timing_length": 64,
}
# Nodes kept in fp32 only when the plain int8 model misses the gate: the FFN input projections
# whose exclusion lifted the minimum cosine most in a per-node sensitivity sweep.
SENSITIVE_NODES = [f"/encoder/layer.{i}/intermediate/dense/MatMul" for i in (1, 3, 4)]


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def version() -> str:
    from models.tokenizer import package_model_dir

    here = Path(__file__).parent
    weights = package_model_dir() / "model.safetensors"
    params = dict(PARAMS, weights_sha256=sha256_file(weights),
                  torch=_dist_version("torch"), onnxruntime=_dist_version("onnxruntime"))
    return content_version(here / "minilm.py", here / "minilm_build.py", here / "minilm_eval.py",
                           here / "tokenizer.py", here / "timing.py", params=params)


def session(path: Path, threads: int = 1, providers: list[str] | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


def embed_texts(run: Any, tokenizer: Any, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Embed texts in length-sorted batches (little padding); ``run(ids, mask) -> embeddings``."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), PARAMS["hidden"]), dtype=np.float32)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        enc = tokenizer.encode([texts[j] for j in idx])
        out[idx] = run(enc.input_ids, enc.attention_mask)
    return out


def ort_runner(sess: Any) -> Any:
    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return run


def export_fp32(model: Any, path: Path) -> None:
    import torch

    ids = torch.ones(2, 16, dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # The legacy exporter is deprecated, but it is the one whose graph ORT can fuse.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ids, torch.ones_like(ids)), str(path),
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
            opset_version=PARAMS["opset"], dynamo=False,
        )


def fuse(src: Path, dst: Path, use_gpu: bool = False) -> Any:
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=PARAMS["num_heads"],
                                   hidden_size=PARAMS["hidden"], opt_level=0, use_gpu=use_gpu)
    opt.save_model_to_file(str(dst))
    return opt


def quantize_int8(src: Path, dst: Path, exclude: list[str] | None = None) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quant_log = logging.getLogger()  # the quantizer warns about pre-processing via root
    level = quant_log.level
    quant_log.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(src), str(dst), per_channel=PARAMS["per_channel"],
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude or [],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        quant_log.setLevel(level)


def make_fp16(src: Path, dst: Path) -> None:
    """GPU-fused fp16 graph with fp32 inputs and outputs (workers feed the same arrays)."""
    opt = fuse(src, dst, use_gpu=True)
    opt.convert_float_to_float16(keep_io_types=True)
    opt.save_model_to_file(str(dst))


def timing_feeds(batch: int, length: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 29000, size=(batch, length), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _check(name: str, result: Any) -> None:
    if not result.passed:
        raise AccuracyGateFailed(
            f"{NAME} {name} fails the accuracy gate vs PyTorch fp32: " + "; ".join(result.failures)
        )


def build(out: Path, step: Callable[[str], None]) -> dict[str, Any]:
    from agentq.config import WorkerSettings
    from models import minilm
    from models.minilm_eval import eval_set, gate
    from models.tokenizer import TextTokenizer, package_model_dir

    src = package_model_dir()
    shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")
    tokenizer = TextTokenizer(out / "tokenizer.json", max_length=PARAMS["max_length"])
    evals = eval_set(PARAMS["eval_queries"])

    step("loading weights and computing the PyTorch fp32 reference")
    model = minilm.load_model(src)
    ref = embed_texts(lambda i, m: minilm.embed(model, i, m), tokenizer, evals.texts)

    files = {v: out / f"{NAME}.{v}.onnx" for v in ("fp32", "fused", "int8", "fp16")}
    step("exporting fp32 ONNX (legacy exporter, opset 17)")
    export_fp32(model, files["fp32"])
    step("fusing transformer operators")
    fuse(files["fp32"], files["fused"])
    step("quantizing to int8 (dynamic, per-channel)")
    quantize_int8(files["fused"], files["int8"])
    step("converting to fp16 for CUDA")
    make_fp16(files["fp32"], files["fp16"])

    results: dict[str, Any] = {}
    for variant in ("fp32", "fused", "int8"):
        step(f"accuracy gate: {variant}")
        cand = embed_texts(ort_runner(session(files[variant], 2)), tokenizer, evals.texts)
        results[variant] = gate(ref, cand, evals.retrieval)
    int8_extra: dict[str, Any] = {"fp32_nodes": []}
    if not results["int8"].passed:
        step("int8 missed the gate: keeping sensitive layers in fp32")
        int8_extra = {"fp32_nodes": SENSITIVE_NODES, "plain_int8": results["int8"].metrics()}
        quantize_int8(files["fused"], files["int8"], exclude=SENSITIVE_NODES)
        cand = embed_texts(ort_runner(session(files["int8"], 2)), tokenizer, evals.texts)
        results["int8"] = gate(ref, cand, evals.retrieval)
    for variant, result in results.items():
        _check(variant, result)

    threads = WorkerSettings().intra_op_threads
    b, length = PARAMS["timing_batch"], PARAMS["timing_length"]
    step(f"timing {', '.join(results)} (batch {b}, length {length}, {threads} thread(s))")
    feeds = timing_feeds(b, length)
    sessions = {v: session(files[v], threads) for v in results}
    timings = best_times_ms({v: functools.partial(s.run, None, feeds)
                             for v, s in sessions.items()})
    fastest = pick_active(timings)

    fp16_metrics = _fp16_cpu_check(files["fp16"], ref, evals, tokenizer)
    variants = []
    for variant, result in results.items():
        metrics = dict(result.metrics(), eval_texts=len(evals.texts),
                       ms_per_batch=round(timings[variant], 2),
                       timing=f"best of 7 interleaved rounds, batch {b} x {length} tokens, "
                       f"{threads} thread(s)")
        if variant == "int8":
            metrics.update(int8_extra)
        variants.append({"variant": variant, "device": "cpu", "file": files[variant].name,
                         "metrics": metrics, "active": variant == fastest})
    variants.append({"variant": "fp16", "device": "cuda", "file": files["fp16"].name,
                     "metrics": fp16_metrics, "active": True})
    return {"variants": variants, "tokenizer": "tokenizer.json",
            "inputs": ["input_ids", "attention_mask"], "output": "embedding",
            "max_length": PARAMS["max_length"], "dim": PARAMS["hidden"]}


def _fp16_cpu_check(path: Path, ref: np.ndarray, evals: Any, tokenizer: Any) -> dict[str, Any]:
    """Gate fp16 on the CPU provider when its kernels exist there; bench/gpu_check.py does CUDA."""
    from models.minilm_eval import gate

    try:
        sess = session(path, 2)
        cand = embed_texts(ort_runner(sess), tokenizer, evals.texts)
    except Exception as e:  # noqa: BLE001 - fp16 kernels are optional on the CPU provider
        return {"cpu_checked": False, "reason": str(e).splitlines()[0][:200]}
    result = gate(ref, cand, evals.retrieval)
    _check("fp16", result)
    return dict(result.metrics(), cpu_checked=True)
