"""Small pieces shared by the hand-written families."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import DaxiaoError, check_choice

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}
# max-pool commutes with these (they never decrease), which lets seed-cnn pool before activating.
MONOTONE = {"relu", "relu6", "tanh"}

# Inputs smaller than this many pixels per side get a stride-1 stem (and no stem max-pool), so a
# 28x28 or 32x32 image is not reduced to 1x1 by a network designed for 224x224 (the CIFAR-ResNet change).
SMALL_INPUT = 64


def make_act(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name](inplace=True) if name in ("relu", "relu6", "silu") else ACTIVATIONS[name]()


def is_small(input_size: int | None) -> bool:
    return input_size is not None and input_size < SMALL_INPUT


def linear_or_identity(num_features: int, num_classes: int) -> nn.Module:
    """The classifier layer; num_classes=0 gives pooled features instead (Keras' include_top=False)."""
    return nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()


class LinearClassifier:
    """timm's model interface (STYLE.md) for a hand-written family whose last layer is a Linear on
    `num_features`, stored under the attribute `classifier_attr`; the family defines forward_features and
    forward_head."""

    classifier_attr = "classifier"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_attr)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        setattr(self, self.classifier_attr, linear_or_identity(self.num_features, num_classes))


def scratch_cfg(in_chans: int, input_size: int) -> dict:
    """pretrained_cfg for a model trained from scratch: normalization comes from the data (None)."""
    return {"input_size": (in_chans, input_size, input_size), "mean": None, "std": None}


@contextmanager
def hub_download(what: str) -> Iterator[None]:
    """Turn a failed weights download into one line that says what to do offline."""
    try:
        yield
    except Exception as e:  # urllib, requests, httpx and huggingface_hub each raise their own types
        raise DaxiaoError(
            f"Could not download pretrained weights for {what} ({type(e).__name__}: {str(e)[:120]}). "
            "Offline? Use --weights FILE with a local .safetensors/.pth, or --model efficientnet-lite0 "
            "(its ImageNet weights come with daxiao), or train without --pretrained."
        ) from None
