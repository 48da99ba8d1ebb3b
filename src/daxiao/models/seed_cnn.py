"""seed-cnn: the seed article's first model, layer for layer; seed-tiny-cnn: the model of its tuning section.

    Conv2D(32, 3x3, activation) -> MaxPooling2D(2x2) -> Flatten -> Dense(128, activation) -> Dense(classes)

The softmax of the Keras version lives in the loss (cross-entropy on logits), as is usual in PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import MONOTONE, LinearClassifier, linear_or_identity, make_act, scratch_cfg
from .registry import register_model


class SeedCNN(LinearClassifier, nn.Module):
    classifier_attr = "fc2"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: int = 28,
                 activation: str = "relu", filters: int = 32, hidden: int = 128, drop_rate: float = 0.0):
        super().__init__()
        if input_size < 4:
            raise ValueError(f"seed-cnn needs inputs of at least 4x4 pixels (received {input_size})")
        self.conv = nn.Conv2d(in_chans, filters, 3)
        self.act1 = make_act(activation)
        self.pool = nn.MaxPool2d(2)
        # Pooling first is exact for activations that never decrease (max(f(a), f(b)) = f(max(a, b)))
        # and runs the activation and its backward on a quarter of the pixels: measurably faster on CPU
        # (benchmarks/seed_cnn.py). Non-monotone ones (gelu, silu) keep the article's order.
        self.pool_first = activation in MONOTONE
        side = (input_size - 2) // 2
        self.num_features = hidden
        self.fc1 = nn.Linear(filters * side * side, hidden)
        self.act2 = make_act(activation)
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.fc2 = linear_or_identity(hidden, num_classes)
        self.pretrained_cfg = scratch_cfg(in_chans, input_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act1(self.pool(x)) if self.pool_first else self.pool(self.act1(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # Flatten in (H, W, C) order, as Keras' Flatten does. It is also the memory order of the
        # channels_last activations fit trains with, so no copy is made and backward stays fast
        # (measured: -15 % per step at batch 128 against flattening in (C, H, W) order).
        x = self.drop(self.act2(self.fc1(x.permute(0, 2, 3, 1).flatten(1))))
        return x if pre_logits else self.fc2(x)


# adam at 3x Keras' rate for twice the epochs: digits 0.953 -> 0.975 test (batch 64, cosine; README models table)
SEED_DEFAULTS = {"lr": 3e-3, "epochs": 20}


@register_model("seed-cnn", "big", args=SeedCNN, defaults=SEED_DEFAULTS)
def seed_cnn(pretrained: bool = False, **kwargs) -> SeedCNN:
    """The article's CNN: Conv32-Pool-Dense128."""
    if pretrained:
        raise ValueError("seed-cnn has no pretrained weights; train it from scratch")
    return SeedCNN(**kwargs)


class SeedTinyCNN(LinearClassifier, nn.Module):
    """The article's tuning model: Conv2D(32, 3x3, activation) -> Flatten -> Dense(classes)."""

    classifier_attr = "fc"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: int = 28,
                 activation: str = "relu", filters: int = 32, drop_rate: float = 0.0):
        super().__init__()
        if input_size < 3:
            raise ValueError(f"seed-tiny-cnn needs inputs of at least 3x3 pixels (received {input_size})")
        self.conv = nn.Conv2d(in_chans, filters, 3)
        self.act = make_act(activation)
        self.drop = nn.Dropout(drop_rate)
        self.num_features = filters * (input_size - 2) ** 2
        self.num_classes = num_classes
        self.fc = linear_or_identity(self.num_features, num_classes)
        self.pretrained_cfg = scratch_cfg(in_chans, input_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.permute(0, 2, 3, 1).flatten(1))  # Keras' (H, W, C) flatten order, as in SeedCNN
        return x if pre_logits else self.fc(x)


@register_model("seed-cnn", "small", args=SeedTinyCNN, defaults=SEED_DEFAULTS)
def seed_tiny_cnn(pretrained: bool = False, **kwargs) -> SeedTinyCNN:
    """The article's tuning model: Conv32-Dense."""
    if pretrained:
        raise ValueError("seed-tiny-cnn has no pretrained weights; train it from scratch")
    return SeedTinyCNN(**kwargs)
