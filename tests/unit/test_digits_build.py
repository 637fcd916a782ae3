"""digits-mlp build: fp32 / static int8 (QDQ) / fp16 variants, the gate, the cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from models import digits, digits_build  # noqa: E402
from models.build import build_models  # noqa: E402
from models.errors import AccuracyGateFailed  # noqa: E402
from models.timing import best_times_ms, pick_active  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("models")
    [manifest] = build_models(["digits-mlp"], root, None)
    manifest["root"] = root
    manifest["dir"] = root / "digits-mlp" / manifest["version"]
    return manifest


def _variant(built: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in built["variants"] if v["variant"] == name)


def _probs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"pixels": x})[0]


def test_three_variants_with_one_active_per_device(built: dict[str, Any]) -> None:
    by_name = {v["variant"]: v for v in built["variants"]}
    assert set(by_name) == {"fp32", "int8", "fp16"}
    assert by_name["fp16"]["device"] == "cuda" and by_name["fp16"]["active"]
    cpu_active = [v["variant"] for v in built["variants"] if v["device"] == "cpu" and v["active"]]
    assert len(cpu_active) == 1
    for v in built["variants"]:
        assert (built["dir"] / v["file"]).exists() and len(v["sha256"]) == 64


def test_int8_is_static_qdq_with_int8_weights(built: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(built["dir"] / _variant(built, "int8")["file"]))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 3
    int8_inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert sum(int(np.prod(i.dims)) for i in int8_inits) >= 64 * 256  # the weights themselves


def test_int8_accuracy_within_one_point_of_fp32_on_held_out_split(built: dict[str, Any]) -> None:
    data = digits.load_data()
    fp32 = digits.accuracy(_probs(built["dir"] / _variant(built, "fp32")["file"], data.x_test),
                           data.y_test)
    int8_probs = _probs(built["dir"] / _variant(built, "int8")["file"], data.x_test)
    int8 = digits.accuracy(int8_probs, data.y_test)
    assert fp32 > 0.9
    assert int8 >= fp32 - 0.01
    assert _variant(built, "int8")["metrics"]["accuracy"] == pytest.approx(int8)
    assert not np.allclose(int8_probs, _probs(built["dir"] / "digits-mlp.fp32.onnx",
                                              data.x_test), atol=1e-4)  # really quantized


def test_fp16_keeps_fp32_inputs_and_outputs_with_fp16_weights(built: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(built["dir"] / _variant(built, "fp16")["file"]))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def test_active_cpu_variant_follows_the_measured_timings(built: dict[str, Any]) -> None:
    cost = {v: _variant(built, v)["metrics"]["us_per_batch"]
            + _variant(built, v)["metrics"]["us_batch1"] for v in ("fp32", "int8")}
    active = next(v["variant"] for v in built["variants"] if v["device"] == "cpu" and v["active"])
    assert active == pick_active(cost)


def test_pick_active_keeps_fp32_unless_beaten_by_the_margin() -> None:
    assert pick_active({"fp32": 100.0, "int8": 95.0}) == "fp32"
    assert pick_active({"fp32": 100.0, "int8": 80.0}) == "int8"
    assert pick_active({"fp32": 100.0, "int8": 120.0}) == "fp32"


def test_second_build_is_a_cached_no_op(built: dict[str, Any]) -> None:
    files = sorted(built["dir"].iterdir())
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    [again] = build_models(["digits-mlp"], built["root"], None)
    assert again["version"] == built["version"] and again["build_s"] == built["build_s"]
    assert [os.stat(f).st_mtime_ns for f in sorted(built["dir"].iterdir())] == mtimes


def test_calibration_reader_yields_all_pixels_in_batches_then_stops() -> None:
    reader = digits_build._PixelReader(np.zeros((130, 64), np.float32), batch=64)
    sizes = []
    while (feed := reader.get_next()) is not None:
        sizes.append(feed["pixels"].shape[0])
    assert sizes == [64, 64, 2]


def test_build_fails_the_gate_when_int8_is_broken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx
    from onnx import numpy_helper

    real = digits_build.quantize_int8

    def broken_quantize(src: Path, dst: Path, calibration: np.ndarray) -> None:
        real(src, dst, calibration)
        model = onnx.load(str(dst))
        for init in model.graph.initializer:
            if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2:
                w = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(np.zeros_like(w), init.name))
        onnx.save(model, str(dst))

    monkeypatch.setattr(digits_build, "quantize_int8", broken_quantize)
    with pytest.raises(AccuracyGateFailed, match="int8 accuracy"):
        build_models(["digits-mlp"], tmp_path, None)


def test_best_times_alternates_candidates_and_keeps_the_minimum() -> None:
    calls: list[str] = []
    best = best_times_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                         rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert set(best) == {"a", "b"} and all(0 <= v < 50 for v in best.values())
