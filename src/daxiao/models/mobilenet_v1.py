"""MobileNet v1 — Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", 2017 (https://arxiv.org/abs/1704.04861).

Written here rather than taken from timm because the article's small model is exactly this network
with Keras' knobs: the width multiplier ``alpha`` and a selectable activation. Layout follows Keras
``keras/src/applications/mobilenet.py``: a 3x3 stem, 13 depthwise-separable blocks, global average
pooling, dropout, classifier.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .layers import LinearClassifier, is_small, linear_or_identity, make_act, scratch_cfg
from .registry import SCRATCH, register_model


class Block(NamedTuple):
    out: int     # pointwise output channels at alpha=1
    stride: int  # stride of the depthwise conv


BLOCKS = [Block(64, 1), Block(128, 2), Block(128, 1), Block(256, 2), Block(256, 1), Block(512, 2),
          *[Block(512, 1)] * 5, Block(1024, 2), Block(1024, 1)]


def conv_bn_act(cin: int, cout: int, k: int, stride: int, groups: int, activation: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), make_act(activation))


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv (one filter per channel) then 1x1 pointwise conv: ~k^2 times fewer MACs."""

    def __init__(self, cin: int, cout: int, stride: int, activation: str):
        super().__init__(conv_bn_act(cin, cin, 3, stride, cin, activation),
                         conv_bn_act(cin, cout, 1, 1, 1, activation))


class MobileNetV1(LinearClassifier, nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, alpha: float = 1.0,
                 activation: str = "relu6", drop_rate: float = 1e-3):
        super().__init__()
        if not 0 < alpha <= 4:
            raise ValueError(f"alpha (width multiplier) must be in (0, 4] (received {alpha})")
        width = lambda c: max(8, int(c * alpha))  # noqa: E731
        stem_stride = 1 if is_small(input_size) else 2
        layers = [conv_bn_act(in_chans, width(32), 3, stem_stride, 1, activation)]
        cin = width(32)
        for b in BLOCKS:
            layers.append(DepthwiseSeparable(cin, width(b.out), b.stride, activation))
            cin = width(b.out)
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.classifier = linear_or_identity(cin, num_classes)
        self.pretrained_cfg = scratch_cfg(in_chans, input_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)


@register_model("mobilenet-v1", "small", args=MobileNetV1, **SCRATCH)
def mobilenet_v1(pretrained: bool = False, **kwargs) -> MobileNetV1:
    """Depthwise-separable convs, width alpha."""
    if pretrained:
        raise ValueError("mobilenet-v1 has no pretrained weights here; use mobilenetv2 or efficientnet-lite0")
    return MobileNetV1(**kwargs)
