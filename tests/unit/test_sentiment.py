"""sentiment-minilm: its head graph, its result rows, its place in the build order, its data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.build import with_requirements
from models.sentiment_minilm import SentimentHandler
from models.spec import Prepared

pytestmark = pytest.mark.timeout(60)


def test_the_build_of_sentiment_reads_minilm_so_minilm_is_built_first():
    assert with_requirements(["sentiment-minilm"]) == ["minilm-l6", "sentiment-minilm"]
    assert with_requirements(["digits-mlp", "sentiment-minilm", "minilm-l6"]) == [
        "digits-mlp", "minilm-l6", "sentiment-minilm"]


def test_appended_head_turns_embeddings_into_softmax_probabilities(tmp_path: Path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from models.sentiment_build import append_head

    # Given an "encoder" whose embedding is its input, and a 3-class linear head
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    emb = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["embedding"])], "enc",
                              [x], [emb])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "enc.onnx"))
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(3, 4)), rng.normal(size=3)
    # When the head is appended
    append_head(tmp_path / "enc.onnx", tmp_path / "clf.onnx", weight, bias)
    sess = ort.InferenceSession(str(tmp_path / "clf.onnx"), providers=["CPUExecutionProvider"])
    inp = rng.normal(size=(5, 4)).astype(np.float32)
    [probs] = sess.run(None, {"x": inp})
    # Then the graph's only output is softmax(x W^T + b)
    assert [o.name for o in sess.get_outputs()] == ["probs"]
    logits = inp @ weight.T + bias
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, want, atol=1e-5)


def test_result_rows_carry_label_index_probs_and_the_label_name(tmp_path):
    # Given a build directory whose manifest names the classes (and holds the tokenizer),
    import shutil

    from models.artifacts import write_manifest
    from models.sentiment_build import LABELS
    from models.tokenizer import package_model_dir

    shutil.copy(package_model_dir() / "tokenizer.json", tmp_path / "tokenizer.json")
    write_manifest(tmp_path, {"labels": list(LABELS), "tokenizer": "tokenizer.json",
                              "max_length": 256, "variants": []})
    handler = SentimentHandler(tmp_path)
    assert handler.labels == list(LABELS)
    prepared = Prepared({}, [0, 1], {}, [{"tokens": 4, "truncated": False},
                                          {"tokens": 256, "truncated": True}])
    rows = handler.results([np.array([[0.1, 0.2, 0.7], [0.8, 0.15, 0.05]], np.float32)],
                           prepared)
    assert [r["label"] for r in rows] == [2, 0]
    assert rows[0]["extra"] == {"label": "positive", "tokens": 4, "truncated": False}
    assert rows[1]["extra"] == {"label": "negative", "tokens": 256, "truncated": True}
    assert rows[1]["probs"] == pytest.approx([0.8, 0.15, 0.05])


def test_the_labelled_corpus_splits_into_disjoint_confident_train_and_held_out_sets():
    from models.sentiment_build import PARAMS, corpus_path, load_split

    try:
        corpus_path()
    except ImportError as e:
        pytest.skip(str(e))
    x_train, y_train, x_test, y_test = load_split()
    assert (len(x_train), len(x_test)) == (PARAMS["n_train"], PARAMS["n_test"])
    assert not set(x_train) & set(x_test)
    assert set(np.unique(y_train)) == set(np.unique(y_test)) == {0, 1, 2}
    assert load_split()[2] == x_test  # seeded: the held-out split never moves
