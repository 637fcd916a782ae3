"""Structured pruning with least-squares repair, layer dropping and distillation, on a small
random encoder of minilm-l6's architecture (the build extra: torch)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

CFG = {"hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128,
       "num_hidden_layers": 3, "vocab_size": 200, "max_position_embeddings": 64,
       "type_vocab_size": 2, "pad_token_id": 0, "layer_norm_eps": 1e-12}


def _model():
    from models.minilm import MiniLMEmbedder

    torch.manual_seed(0)
    return MiniLMEmbedder(CFG).eval()


def _data(n_batches: int = 12, seed: int = 1):
    from models.minilm_prune import _Batch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(5, 200, (16, 20), generator=g)
        lengths = torch.randint(3, 21, (16,), generator=g)
        mask = (torch.arange(20)[None, :] < lengths[:, None]).long()
        out.append(_Batch(ids * mask, mask, mask.bool()))
    return out


def _cos(a, b, data):
    with torch.no_grad():
        return float(torch.cat([torch.nn.functional.cosine_similarity(
            a(x.ids, x.mask), b(x.ids, x.mask)) for x in data]).mean())


def test_pruning_shrinks_the_matrices_and_the_repair_beats_plain_removal():
    from models.minilm_prune import prune

    teacher, data, held = _model(), _data(), _data(seed=2)
    pruned = copy.deepcopy(teacher)
    info = prune(pruned, data, heads=1, inner=64)
    for layer in pruned.encoder.layer:
        assert layer.attention.self.query.weight.shape == (32, 64)
        assert layer.attention.self.heads == 1
        assert layer.attention.output.dense.weight.shape == (64, 32)
        assert layer.intermediate.dense.weight.shape == (64, 64)
        assert layer.output.dense.weight.shape == (64, 64)
    assert [len(k["heads"]) for k in info["layers"]] == [1, 1, 1]

    # The same heads and neurons removed without the least-squares refit: on texts the
    # calibration did not see, the repaired model is closer to the teacher.
    plain = copy.deepcopy(teacher)
    for layer, kept in zip(plain.encoder.layer, info["layers"], strict=True):
        from models.minilm_prune import _shrink_rows

        sa = layer.attention.self
        cols = torch.cat([torch.arange(h * 32, (h + 1) * 32) for h in kept["heads"]])
        sa.query, sa.key, sa.value = (_shrink_rows(sa.query, cols), _shrink_rows(sa.key, cols),
                                      _shrink_rows(sa.value, cols))
        sa.heads = 1
        out = layer.attention.output.dense
        new = torch.nn.Linear(32, 64)
        with torch.no_grad():
            new.weight.copy_(out.weight[:, cols])
            new.bias.copy_(out.bias)
        layer.attention.output.dense = new
        keep = torch.arange(64)  # the neuron choice is not under test here
        layer.intermediate.dense = _shrink_rows(layer.intermediate.dense, keep)
        down = torch.nn.Linear(64, 64)
        with torch.no_grad():
            down.weight.copy_(layer.output.dense.weight[:, keep])
            down.bias.copy_(layer.output.dense.bias)
        layer.output.dense = down
    assert _cos(pruned, teacher, held) > _cos(plain, teacher, held)
    with torch.no_grad():
        emb = pruned(held[0].ids, held[0].mask)
    assert torch.allclose(emb.norm(dim=1), torch.ones(16), atol=1e-5)


def test_every_calibration_text_weighs_the_same_in_the_repair_however_long():
    from models.minilm_prune import _ridge, _text_weights

    data = _data(n_batches=3)
    w = _text_weights(data).squeeze(1)
    lengths = torch.cat([b.mask.sum(1) for b in data])
    per_text = torch.split(w, lengths.tolist())  # real tokens come text by text, in order
    totals = torch.stack([t.sum() for t in per_text])
    assert torch.allclose(totals, totals[0].expand_as(totals), rtol=1e-5)
    assert abs(float(w.mean()) - 1.0) < 1e-5

    # Two groups of rows that disagree (y = 2x and y = -x): the weighted fit follows the heavy
    # one, the unweighted fit lands between them.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 1, generator=g)
    y = torch.cat([2 * x[:100], -x[100:]])
    heavy = torch.cat([torch.full((100, 1), 100.0), torch.ones(100, 1)])
    w_heavy, _ = _ridge(x, y, rel=1e-9, weights=heavy)
    w_plain, _ = _ridge(x, y, rel=1e-9)
    assert abs(float(w_heavy) - 2.0) < 0.1
    assert -1.0 < float(w_plain) < 2.0 and abs(float(w_plain) - 2.0) > 0.5


def test_a_student_with_fewer_layers_gets_closer_to_its_teacher_by_distillation():
    from models.minilm_prune import distil, drop_layers

    teacher, data, held = _model(), _data(), _data(seed=2)
    student = copy.deepcopy(teacher)
    drop_layers(student, [0, 2])
    assert len(student.encoder.layer) == 2
    before = _cos(student, teacher, held)
    info = distil(student, teacher, data, layer_map=[1, 2], steps=60, lr=1e-3)
    assert info["steps"] == 60 and info["steps_planned"] == 60
    assert _cos(student, teacher, held) > before
    assert not student.training  # left in eval mode, ready to export


def test_the_training_corpus_is_distinct_texts_and_avoids_the_gates_seed():
    from models.hard_texts import hard_texts
    from models.minilm_prune import corpus

    texts = corpus(n_sentences=50, n_tweets=0, hard_seeds=2)
    assert len(texts) == len(set(texts))
    gate_only = set(hard_texts(7)[0]) - set(hard_texts(1002)[0]) - set(hard_texts(1003)[0]) \
        - set(hard_texts(1001)[0])
    assert gate_only and not gate_only & set(texts)


def test_the_fastest_candidate_that_passes_the_tier_gate_is_activated_and_none_fails_the_build():
    import numpy as np

    from models.errors import AccuracyGateFailed
    from models.minilm_eval import gate
    from models.minilm_fast_build import PARAMS, choose_active

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 8))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    near = ref + 0.01 * rng.normal(size=ref.shape)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    far = rng.normal(size=ref.shape)
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    th = {"min_mean": PARAMS["min_mean"], "min_min": PARAMS["min_min"]}
    good, bad = gate(ref, near, **th), gate(ref, far, **th)
    assert good.passed and not bad.passed
    timings = {"int8": 3.0, "pruned-int8": 2.0, "distilled-int8": 1.0}
    # the fastest candidate fails its hard-text gate: the fastest one that passes both wins
    gates = {"int8": (good, good), "pruned-int8": (good, good), "distilled-int8": (good, bad)}
    assert choose_active(gates, timings) == "pruned-int8"
    with pytest.raises(AccuracyGateFailed, match="no candidate passes the tier gate"):
        choose_active({"int8": (bad, good), "pruned-int8": (good, bad)}, timings)
