"""Build steps for digits-mlp: train, export fp32, check ONNX Runtime against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.artifacts import content_version
from models.errors import AccuracyGateFailed

PARAMS = {"epochs": 300, "seed": 0, "opset": 17}


def version() -> str:
    here = Path(__file__).parent
    return content_version(here / "digits.py", here / "digits_build.py", params=PARAMS)


def _ort_probs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixels": x})[0]


def build(out: Path, step: Any) -> dict[str, Any]:
    from models import digits

    step("training on the bundled digits set")
    data = digits.load_data()
    model = digits.train(data, epochs=PARAMS["epochs"])
    ref = digits.torch_reference(model, data.x_test)
    torch_acc = digits.accuracy(ref, data.y_test)
    step("exporting fp32 ONNX")
    fp32 = out / "digits-mlp.fp32.onnx"
    digits.export_onnx(model, fp32)
    step("checking ONNX Runtime against PyTorch")
    probs = _ort_probs(fp32, data.x_test)
    ort_acc = digits.accuracy(probs, data.y_test)
    max_diff = float(np.abs(probs - ref).max())
    if max_diff > 1e-4 or abs(ort_acc - torch_acc) > 1e-9:
        raise AccuracyGateFailed(
            f"digits-mlp fp32 ONNX differs from PyTorch: max |Δp| {max_diff:.2e}, "
            f"accuracy {ort_acc:.4f} vs {torch_acc:.4f}"
        )
    metrics = {"accuracy": ort_acc, "torch_accuracy": torch_acc, "max_abs_diff": max_diff,
               "test_size": len(data.y_test)}
    np.save(out / "calibration.npy", data.x_train[:256])
    return {"variants": [
        {"variant": "fp32", "device": "cpu", "file": fp32.name, "metrics": metrics,
         "active": True},
    ]}
