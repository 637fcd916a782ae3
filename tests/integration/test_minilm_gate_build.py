"""The minilm-l6 build refuses a variant below the gate, and the registry keeps the last good one.

Given a good build registered (cached by content hash), a rebuild whose int8 step produces a
broken graph must fail with ``AccuracyGateFailed`` before anything is registered or activated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.errors import AccuracyGateFailed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _broken_quantizer(real):
    """The real quantizer, then one int8 weight matrix of layer 3's FFN shuffled."""
    import onnx
    from onnx import numpy_helper

    def quantize(src: Path, dst: Path, exclude=None) -> None:
        real(src, dst, exclude)
        model = onnx.load(str(dst))
        init = next(i for i in model.graph.initializer
                    if "layer.3" in i.name and "intermediate" in i.name
                    and i.data_type == onnx.TensorProto.INT8)
        w = numpy_helper.to_array(init).copy()
        np.random.default_rng(0).shuffle(w.reshape(-1))
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        onnx.save(model, str(dst))
    return quantize


def test_a_broken_int8_fails_the_build_and_the_previous_active_variant_stays(
        migrated, owner_db, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from models import minilm_build, minilm_quant
    from models.build import build_models
    from storage.registry import active_variant

    [good] = build_models(["minilm-l6"], migrated.worker.models_dir, migrated.database_url)
    with owner_db.connect() as conn:
        before = active_variant(conn, "minilm-l6", "cpu")
    assert (before["version"], before["variant"]) == (good["version"], "int8")

    # When a rebuild (smaller paraphrase set, one ladder step: the gate itself is what is under
    # test) quantizes into a graph with one weight matrix scrambled,
    monkeypatch.setitem(minilm_build.PARAMS, "eval_queries", 40)
    monkeypatch.setattr(minilm_quant, "FP32_LAYER_LADDER", (2,))
    monkeypatch.setattr(minilm_quant, "quantize_int8",
                        _broken_quantizer(minilm_quant.quantize_int8))
    with pytest.raises(AccuracyGateFailed, match="int8 fails the accuracy gate"):
        build_models(["minilm-l6"], tmp_path, migrated.database_url, force=True)

    # Then nothing was registered: the good build is still the active one.
    with owner_db.connect() as conn:
        after = active_variant(conn, "minilm-l6", "cpu")
    assert (after["version"], after["sha256"]) == (before["version"], before["sha256"])
    assert not list(tmp_path.glob("minilm-l6/*/manifest.json"))
