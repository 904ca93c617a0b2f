"""The networks the torch algorithms train: an MLP for tables, a small CNN for images.

Every network ends in a ``head`` (the output layer), so ``freeze:
[all_but_head]`` and replacing the output layer for a different number of
classes work the same way for both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}[name]()


class MLP(nn.Module):
    """``layers`` fully connected blocks of ``hidden_size`` units, then the head."""

    def __init__(self, inputs: int, outputs: int, hidden_size: int, layers: int, dropout: float, activation: str):
        super().__init__()
        blocks: list[nn.Module] = []
        width = inputs
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden_size), _activation(activation), nn.Dropout(dropout)]
            width = hidden_size
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CNN(nn.Module):
    """Two 3x3 convolution blocks (``channels`` then ``2*channels``), max pooling,
    a fully connected layer of ``hidden_size`` units, then the head."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        outputs: int,
        channels: int,
        hidden_size: int,
        dropout: float,
        activation: str,
    ):
        super().__init__()
        depth, height, width = image_shape
        self.image_shape = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(depth, channels, 3, padding=1),
            _activation(activation),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            _activation(activation),
            nn.MaxPool2d(2),
        )
        flat = 2 * channels * (height // 2) * (width // 2)
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden_size), _activation(activation), nn.Dropout(dropout)
        )
        self.head = nn.Linear(hidden_size, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, *self.image_shape)
        return self.head(self.body(self.features(x)))


def build(kind: str, config: dict[str, Any]) -> nn.Module:
    """The network ``kind`` (``mlp`` or ``cnn``) from its saved ``config``."""
    if kind == "mlp":
        return MLP(
            config["inputs"],
            config["outputs"],
            config["hidden_size"],
            config["layers"],
            config["dropout"],
            config["activation"],
        )
    return CNN(
        tuple(config["image_shape"]),
        config["outputs"],
        config["channels"],
        config["hidden_size"],
        config["dropout"],
        config["activation"],
    )
