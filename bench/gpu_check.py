"""GPU check: the fp16 variants on ONNX Runtime's CUDA provider with IO binding.

`python -m bench.gpu_check [--models-dir DIR] [--out FILE]`

On a machine with ``onnxruntime-gpu`` and a GPU: loads each model's fp16 variant with
``CUDAExecutionProvider``, checks its outputs against the CPU fp32 variant (minilm: cosine gate on
evaluation texts; digits: held-out accuracy and agreement), times batch 1/32/128 with inputs and
outputs bound on the device (``device_ms``) and with host copies included (``host_ms``), and
prints one JSON document. Elsewhere it prints that no CUDA provider is available and exits 0.
Exit status 1 when the provider is present but unusable or a check fails. Takes well under five
minutes when the models are already built.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = [1, 32, 128]
MINILM_LENGTH = 64


def _median_ms(fn: Callable[[], Any], repeats: int = 30) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 4)


def _cuda_session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=[
        ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"session for {path.name} fell back to {sess.get_providers()}")
    return sess


def _bound_runner(sess: Any, feeds: dict[str, np.ndarray], output: str
                  ) -> tuple[Callable[[], None], Callable[[], np.ndarray]]:
    """IO binding with inputs copied to the GPU once and the output left there."""
    import onnxruntime as ort

    binding = sess.io_binding()
    keep = []
    for name, arr in feeds.items():
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), "cuda", 0)
        keep.append(value)
        binding.bind_ortvalue_input(name, value)
    binding.bind_output(output, "cuda", 0)

    def run() -> None:
        sess.run_with_iobinding(binding)

    def fetch() -> np.ndarray:
        _ = keep  # the device buffers must outlive the binding
        return binding.copy_outputs_to_cpu()[0]

    return run, fetch


def _files(manifest: dict[str, Any], models_dir: Path) -> dict[str, Path]:
    base = models_dir / manifest["name"] / manifest["version"]
    return {v["variant"]: base / v["file"] for v in manifest["variants"]}


def check_minilm(manifest: dict[str, Any], models_dir: Path) -> dict[str, Any]:
    from models.minilm_build import embed_texts, ort_runner, session
    from models.minilm_eval import eval_set, gate
    from models.tokenizer import TextTokenizer

    files = _files(manifest, models_dir)
    tok = TextTokenizer(files["fp16"].parent / "tokenizer.json")
    es = eval_set()
    cpu = embed_texts(ort_runner(session(files["fp32"], 4)), tok, es.texts)
    sess = _cuda_session(files["fp16"])

    def gpu_run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        run, fetch = _bound_runner(sess, {"input_ids": ids, "attention_mask": mask}, "embedding")
        run()
        return fetch()

    result = gate(cpu, embed_texts(gpu_run, tok, es.texts), es.retrieval)
    timings = {}
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        ids = rng.integers(1000, 29000, size=(batch, MINILM_LENGTH), dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        run, _ = _bound_runner(sess, feeds, "embedding")
        device_ms = _median_ms(run)
        host_ms = _median_ms(functools.partial(sess.run, None, feeds))
        timings[f"b{batch}"] = {"device_ms": device_ms, "host_ms": host_ms,
                                "sentences_per_s": round(batch / device_ms * 1000, 1)}
    return {"passed": result.passed, "failures": list(result.failures),
            "vs": "cpu fp32", "length": MINILM_LENGTH, **result.metrics(), "timings": timings}


def check_digits(manifest: dict[str, Any], models_dir: Path) -> dict[str, Any]:
    import onnxruntime as ort
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    files = _files(manifest, models_dir)
    x, y = load_digits(return_X_y=True)
    _, x_test, _, y_test = train_test_split(x.astype(np.float32), y, test_size=0.2,
                                            random_state=0, stratify=y)
    cpu = ort.InferenceSession(str(files["fp32"]), providers=["CPUExecutionProvider"])
    ref = cpu.run(None, {"pixels": x_test})[0]
    sess = _cuda_session(files["fp16"])
    run, fetch = _bound_runner(sess, {"pixels": x_test}, "probs")
    run()
    probs = fetch()
    acc = float((probs.argmax(1) == y_test).mean())
    ref_acc = float((ref.argmax(1) == y_test).mean())
    timings = {}
    for batch in BATCHES:
        xb = np.resize(x_test, (batch, 64)).astype(np.float32)
        run_b, _ = _bound_runner(sess, {"pixels": xb}, "probs")
        timings[f"b{batch}"] = {"device_ms": _median_ms(run_b, 200),
                                "host_ms": _median_ms(
                                    functools.partial(sess.run, None, {"pixels": xb}), 200)}
    return {"passed": acc >= ref_acc - 0.01, "accuracy": acc, "cpu_fp32_accuracy": ref_acc,
            "agreement": float((probs.argmax(1) == ref.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(probs - ref).max()), "timings": timings}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print(json.dumps({"status": "skipped", "reason": "no CUDA provider: onnxruntime-gpu is "
                          "not installed or no GPU is visible",
                          "providers": ort.get_available_providers()}))
        print("gpu_check: no CUDA provider available here; nothing to check", file=sys.stderr)
        return 0
    from agentq.config import Settings
    from models.build import build_models

    models_dir = args.models_dir or Settings.from_env().worker.models_dir
    t0 = time.perf_counter()
    manifests = {m["name"]: m for m in build_models(None, models_dir, None)}
    report: dict[str, Any] = {"status": "ok", "onnxruntime": ort.__version__,
                              "providers": ort.get_available_providers()}
    try:
        report["minilm-l6"] = check_minilm(manifests["minilm-l6"], models_dir)
        report["digits-mlp"] = check_digits(manifests["digits-mlp"], models_dir)
    except Exception as e:  # noqa: BLE001 - report any CUDA failure as a failed check
        report.update(status="failed", error=f"{type(e).__name__}: {e}")
    if report["status"] == "ok" and not all(report[m]["passed"]
                                            for m in ("minilm-l6", "digits-mlp")):
        report["status"] = "failed"
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if report["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
