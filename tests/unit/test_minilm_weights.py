"""The packaged all-MiniLM-L6-v2 weights load through the safetensors package into our encoder
(the build extra: torch, safetensors, the weights package)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")


def test_packaged_weights_load_strictly_and_embed_to_unit_length():
    from models.minilm import load_model, load_safetensors
    from models.tokenizer import package_model_dir

    try:
        model_dir = package_model_dir()
    except Exception as e:  # the weights package is part of the build extra
        pytest.skip(str(e))
    state = load_safetensors(model_dir / "model.safetensors")
    assert state["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert {t.dtype for k, t in state.items() if k != "embeddings.position_ids"} == {torch.float32}
    model = load_model(model_dir)  # raises when a parameter is missing or unexpected
    ids = torch.tensor([[101, 7592, 2088, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        out = model(ids, mask)
    assert out.shape == (1, 384)
    assert float(out.norm()) == pytest.approx(1.0, abs=1e-5)
