"""The minilm accuracy gate: pure logic on synthetic vectors, then on the built int8 model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.minilm_eval import Retrieval, eval_set, gate, retrieval_top1, row_cosine
from tests.support import require


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def ref() -> np.ndarray:
    return _unit(np.random.default_rng(0).normal(size=(300, 384)))


def test_identical_embeddings_pass(ref: np.ndarray) -> None:
    result = gate(ref, ref.copy())
    assert result.passed and result.failures == ()
    assert result.mean_cosine == pytest.approx(1.0) and result.min_cosine == pytest.approx(1.0)


def test_small_noise_passes_and_reports_its_cosines(ref: np.ndarray) -> None:
    noisy = _unit(ref + np.random.default_rng(1).normal(scale=0.004, size=ref.shape))
    result = gate(ref, noisy)
    assert result.passed
    assert 0.99 < result.mean_cosine < 1.0 and result.min_cosine < result.mean_cosine


def test_one_badly_wrong_row_fails_on_the_minimum(ref: np.ndarray) -> None:
    cand = ref.copy()
    cand[17] = _unit(np.random.default_rng(2).normal(size=(1, 384)))[0]
    result = gate(ref, cand)
    assert not result.passed
    assert result.mean_cosine > 0.99  # the mean alone would have hidden it
    assert any("minimum cosine" in f and "row 17" in f for f in result.failures)


def test_widespread_drift_fails_on_the_mean(ref: np.ndarray) -> None:
    drift = _unit(ref + np.random.default_rng(3).normal(scale=0.01, size=ref.shape))
    result = gate(ref, drift, min_min=0.0)
    assert not result.passed and any("mean cosine" in f for f in result.failures)


def test_non_unit_length_fails_even_when_directions_match(ref: np.ndarray) -> None:
    result = gate(ref, ref * 1.5)
    assert result.min_cosine == pytest.approx(1.0)
    assert not result.passed and any("unit length" in f for f in result.failures)


def test_nan_output_fails(ref: np.ndarray) -> None:
    cand = ref.copy()
    cand[0, 0] = np.nan
    assert not gate(ref, cand).passed


def test_shape_mismatch_is_an_error(ref: np.ndarray) -> None:
    with pytest.raises(ValueError):
        gate(ref, ref[:-1])


def test_retrieval_drop_over_two_points_fails(ref: np.ndarray) -> None:
    # Given 100 queries whose answers are near copies of themselves
    queries = ref[:100]
    answers = _unit(queries + np.random.default_rng(4).normal(scale=0.01, size=queries.shape))
    emb = np.concatenate([queries, answers, ref[200:]])
    r = Retrieval(queries=np.arange(100), corpus=np.arange(100, 300), answers=np.arange(100))
    assert retrieval_top1(emb, r) == 1.0
    # When a candidate swaps the answers of 3 queries with distractors
    cand = emb.copy()
    for q in range(3):
        cand[100 + q], cand[200 + q] = emb[200 + q], emb[100 + q]
    result = gate(emb, cand, r, min_min=-1.0, min_mean=0.0)
    # Then top-1 falls by 3 points and the gate fails; a 2-point fall still passes
    assert result.top1_ref == 1.0 and result.top1_cand == pytest.approx(0.97)
    assert not result.passed and any("retrieval" in f for f in result.failures)
    cand2 = emb.copy()
    for q in range(2):
        cand2[100 + q], cand2[200 + q] = emb[200 + q], emb[100 + q]
    assert gate(emb, cand2, r, min_min=-1.0, min_mean=0.0).passed


def test_row_cosine_matches_definition() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0]])
    assert row_cosine(a, b).tolist() == pytest.approx([0.0, 1.0])


def test_eval_set_is_large_varied_and_deterministic() -> None:
    es = eval_set()
    assert len(es.texts) >= 500 and es.texts == eval_set().texts
    kinds = {k: es.kinds.count(k) for k in set(es.kinds)}
    assert kinds["short"] >= 50 and kinds["long"] >= 10
    assert sum(len(t) <= 3 for t in es.texts) >= 20  # very short texts quantize worst
    r = es.retrieval
    assert len(r.corpus) - len(r.queries) >= 300  # hundreds of distractors
    # each query's answer is its paraphrase, and no distractor repeats a paraphrase
    paraphrases = [es.texts[i] for i in r.corpus[r.answers]]
    assert all(es.kinds[i] == "paraphrase" for i in r.corpus[r.answers])
    distractors = {es.texts[i] for i in r.corpus if es.kinds[i] == "distractor"}
    assert not distractors & set(paraphrases)


# --- on the built model (cached by content hash; builds on first use, about 90 s) -------------

@pytest.fixture(scope="module")
def built_minilm() -> dict[str, Any]:
    pytest.importorskip("torch")
    from agentq.config import Settings
    from models.build import build_models
    from models.tokenizer import TokenizerNotFound

    try:
        [manifest] = build_models(["minilm-l6"], Settings.from_env().worker.models_dir, None)
    except TokenizerNotFound as e:
        require(False, str(e))
        raise
    manifest["dir"] = Settings.from_env().worker.models_dir / "minilm-l6" / manifest["version"]
    return manifest


@pytest.fixture(scope="module")
def sample(built_minilm: dict[str, Any]) -> dict[str, Any]:
    """160 eval texts (40 queries, their paraphrases, 80 distractors, short and long texts)."""
    from models import minilm
    from models.minilm_build import embed_texts
    from models.tokenizer import TextTokenizer, package_model_dir

    es = eval_set()
    idx = np.r_[0:40, 200:240, 400:480, [i for i, k in enumerate(es.kinds) if k == "short"][:30],
                [i for i, k in enumerate(es.kinds) if k == "long"][:5]]
    texts = [es.texts[i] for i in idx]
    tok = TextTokenizer(built_minilm["dir"] / "tokenizer.json")
    model = minilm.load_model(package_model_dir())
    ref = embed_texts(lambda i, m: minilm.embed(model, i, m), tok, texts)
    r = Retrieval(queries=np.arange(40), corpus=np.arange(40, 160), answers=np.arange(40))
    return {"texts": texts, "tok": tok, "ref": ref, "retrieval": r}


def _embed_onnx(path: Path, sample: dict[str, Any]) -> np.ndarray:
    from models.minilm_build import embed_texts, ort_runner, session

    return embed_texts(ort_runner(session(path, 2)), sample["tok"], sample["texts"])


def test_int8_model_matches_pytorch_within_the_gate_and_is_unit_length(
        built_minilm: dict[str, Any], sample: dict[str, Any]) -> None:
    int8 = next(v for v in built_minilm["variants"] if v["variant"] == "int8")
    cand = _embed_onnx(built_minilm["dir"] / int8["file"], sample)
    assert cand.shape == (len(sample["texts"]), 384) and cand.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(cand, axis=1), 1.0, atol=1e-4)
    result = gate(sample["ref"], cand, sample["retrieval"])
    assert result.passed, result.failures
    assert result.mean_cosine < 0.99999  # really quantized, not the fp32 graph under a new name


def test_gate_fails_a_model_with_a_corrupted_weight(
        built_minilm: dict[str, Any], sample: dict[str, Any], tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    # Given the fp32 model with one FFN weight matrix shuffled
    fp32 = next(v for v in built_minilm["variants"] if v["variant"] == "fp32")
    model = onnx.load(str(built_minilm["dir"] / fp32["file"]))
    node = next(n for n in model.graph.node if n.name == "/encoder/layer.2/output/dense/MatMul")
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    w = numpy_helper.to_array(init).copy()
    np.random.default_rng(0).shuffle(w.reshape(-1))
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    # When it is gated against PyTorch, Then it fails on cosine
    result = gate(sample["ref"], _embed_onnx(broken, sample), sample["retrieval"])
    assert not result.passed
    assert any("cosine" in f for f in result.failures)
