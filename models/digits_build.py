"""Build steps for digits-mlp: train, export fp32, static int8 (QDQ, calibrated), fp16, gate.

Variants (all take ``pixels`` float32 (batch, 64) and return ``probs`` float32 (batch, 10)):

* ``fp32`` — the exported graph, checked against PyTorch to 1e-4;
* ``int8`` — static QDQ quantization of the Gemm layers (per-channel weights) with activation
  ranges calibrated on the training pixels; accuracy must stay within 1 point of fp32 on the
  held-out split;
* ``fp16`` — fp16 weights and compute with fp32 inputs/outputs, device ``cuda``.

The model is tiny, so per-call overhead dominates: the active CPU variant is the one measured
cheapest here (batch 1 + batch 64 time), and a quantized variant must beat fp32 by 10% to win —
usually it does not, since the QDQ pairs cost about what the int8 arithmetic saves.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.artifacts import content_version
from models.errors import AccuracyGateFailed
from models.timing import best_times_ms, pick_active

PARAMS = {"epochs": 300, "seed": 0, "opset": 17, "train_threads": 1, "int8_max_drop": 0.01,
          "timing_batch": 64}


def version() -> str:
    here = Path(__file__).parent
    return content_version(here / "digits.py", here / "digits_build.py", here / "timing.py",
                           params=PARAMS)


def _session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_probs(path: Path, x: np.ndarray) -> np.ndarray:
    return _session(path).run(None, {"pixels": x})[0]


class _PixelReader:
    """CalibrationDataReader over training pixels, in batches of 64."""

    def __init__(self, pixels: np.ndarray, batch: int = 64) -> None:
        self._batches = iter([pixels[i:i + batch] for i in range(0, len(pixels), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"pixels": batch}


def quantize_int8(src: Path, dst: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()  # the quantizer suggests pre-processing through the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(src), str(dst), _PixelReader(calibration), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Gemm", "MatMul"], per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True},
        )
    finally:
        root.setLevel(level)


def make_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def _train_single_thread(digits: Any, data: Any) -> Any:
    """Train on one thread: for a model this small, threads only add sync overhead (~10×)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return digits.train(data, epochs=PARAMS["epochs"])
    finally:
        torch.set_num_threads(previous)


def build(out: Path, step: Callable[[str], None]) -> dict[str, Any]:
    from agentq.config import WorkerSettings
    from models import digits

    step("training on the bundled digits set")
    data = digits.load_data()
    model = _train_single_thread(digits, data)
    ref = digits.torch_reference(model, data.x_test)
    torch_acc = digits.accuracy(ref, data.y_test)
    step("exporting fp32 ONNX")
    files = {v: out / f"digits-mlp.{v}.onnx" for v in ("fp32", "int8", "fp16")}
    with warnings.catch_warnings():  # the legacy exporter's deprecation notice
        warnings.simplefilter("ignore")
        digits.export_onnx(model, files["fp32"])
    step("checking ONNX Runtime against PyTorch")
    probs = _ort_probs(files["fp32"], data.x_test)
    ort_acc = digits.accuracy(probs, data.y_test)
    max_diff = float(np.abs(probs - ref).max())
    if max_diff > 1e-4 or abs(ort_acc - torch_acc) > 1e-9:
        raise AccuracyGateFailed(
            f"digits-mlp fp32 ONNX differs from PyTorch: max |Δp| {max_diff:.2e}, "
            f"accuracy {ort_acc:.4f} vs {torch_acc:.4f}"
        )
    np.save(out / "calibration.npy", data.x_train[:256])

    step("static int8 quantization (QDQ, calibrated on training pixels)")
    quantize_int8(files["fp32"], files["int8"], data.x_train)
    step("fp16 conversion for CUDA")
    make_fp16(files["fp32"], files["fp16"])

    metrics: dict[str, dict[str, Any]] = {
        "fp32": {"accuracy": ort_acc, "torch_accuracy": torch_acc, "max_abs_diff": max_diff}}
    for variant in ("int8", "fp16"):
        step(f"accuracy gate: {variant}")
        p = _ort_probs(files[variant], data.x_test)
        acc = digits.accuracy(p, data.y_test)
        metrics[variant] = {"accuracy": acc, "fp32_accuracy": ort_acc,
                            "max_abs_diff": float(np.abs(p - ref).max()),
                            "agreement": float((p.argmax(1) == ref.argmax(1)).mean())}
        if acc < ort_acc - PARAMS["int8_max_drop"]:
            raise AccuracyGateFailed(
                f"digits-mlp {variant} accuracy {acc:.4f} is more than "
                f"{PARAMS['int8_max_drop']:.0%} below fp32 {ort_acc:.4f} on the held-out split"
            )

    threads = WorkerSettings().intra_op_threads
    step(f"timing fp32 and int8 ({threads} thread(s))")
    batch = data.x_test[:PARAMS["timing_batch"]]
    sessions = {v: _session(files[v], threads) for v in ("fp32", "int8")}
    for size, key in ((len(batch), "us_per_batch"), (1, "us_batch1")):
        feeds = {"pixels": batch[:size]}
        best = best_times_ms({v: functools.partial(s.run, None, feeds)
                              for v, s in sessions.items()}, rounds=300, warmup=20)
        for v, ms in best.items():
            metrics[v][key] = round(ms * 1000, 1)
    for v in sessions:
        metrics[v]["timing"] = (f"best of 300 interleaved rounds, batch {len(batch)} and 1, "
                                f"{threads} thread(s)")
    active = pick_active({v: metrics[v]["us_per_batch"] + metrics[v]["us_batch1"]
                          for v in sessions})
    for m in metrics.values():
        m["test_size"] = len(data.y_test)
    return {"variants": [
        {"variant": v, "device": "cuda" if v == "fp16" else "cpu", "file": files[v].name,
         "metrics": metrics[v], "active": v == "fp16" or v == active}
        for v in ("fp32", "int8", "fp16")
    ], "inputs": ["pixels"], "output": "probs"}
