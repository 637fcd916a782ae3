"""digits-mlp: an MLP (64 → 256 → 128 → 10) trained at build time on scikit-learn's digits set.

Pixel scaling (0..16 → 0..1) and the softmax live inside the graph, so the ONNX model takes raw
job pixels and returns probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
EPOCHS = 300
INPUT_NAME = "pixels"
OUTPUT_NAME = "probs"


class DigitsMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(pixels / 16.0), dim=-1)


@dataclass
class DigitsData:
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def load_data() -> DigitsData:
    """The bundled digits set (no download), split 80/20 with a fixed seed."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.2, random_state=SEED, stratify=y
    )
    return DigitsData(x_train, x_test, y_train, y_test)


def train(data: DigitsData, epochs: int = EPOCHS) -> DigitsMLP:
    torch.manual_seed(SEED)
    model = DigitsMLP()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        opt.zero_grad()
        logits = model.net(x / 16.0)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


def export_onnx(model: DigitsMLP, path: Path) -> None:
    """fp32 ONNX with a dynamic batch axis."""
    example = torch.zeros(2, 64)
    torch.onnx.export(
        model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=17, dynamo=False,
    )


def torch_reference(model: DigitsMLP, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()
