"""airnet: Keller Jordan's airbench94 network (github.com/KellerJordan/cifar10-airbench, legacy/airbench94.py),
sized for a CPU and for small grey or colour images; the model of `--recipe speedrun`.

    stem    2x2 conv, no padding (airbench's "whitening" layer, here learned from a plain init), GELU
    3 x     conv 3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv 3x3 -> BatchNorm -> GELU
    head    global max-pool -> Linear (no bias) -> x scale

28x28 inputs shrink 27 -> 13 -> 6 -> 3 -> 1, as airbench's 32 -> 31 -> 15 -> 7 -> 3 -> 1. What is taken over
and why: BatchNorm after the pool (a quarter of the pixels to normalize), BatchNorm momentum 0.4 in
torch's convention (airbench's 0.6) (so statistics follow the fast-moving weights of a short run), convolutions
initialised as identities on their first channels (Dirac: every block starts near a pass-through), and a
logit scale of 1/9 instead of a learned temperature. The widths are what fit a CPU's budget: airbench's
64/256/256 costs ~80 M MACs per 28x28 image; the default 48/96/192 costs ~25 M (`daxiao models`).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import LinearClassifier, make_act, scratch_cfg
from .registry import declared_args, register_model


class Conv(nn.Conv2d):
    """3x3 'same' convolution without bias, Dirac-initialised on its first in-channels (airbench)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, padding: int | str = "same", bias: bool = False):
        super().__init__(cin, cout, kernel_size, padding=padding, bias=bias)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        w = self.weight.data
        torch.nn.init.dirac_(w[: w.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, activation: str, bn_momentum: float, ceil: bool = False):
        super().__init__()
        self.conv1 = Conv(cin, cout)
        self.pool = nn.MaxPool2d(2, ceil_mode=ceil)
        self.norm1 = nn.BatchNorm2d(cout, momentum=bn_momentum)
        self.act1 = make_act(activation)
        self.conv2 = Conv(cout, cout)
        self.norm2 = nn.BatchNorm2d(cout, momentum=bn_momentum)
        self.act2 = make_act(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class AirNet(LinearClassifier, nn.Module):
    classifier_attr = "fc"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: int = 28,
                 widths: tuple[int, int, int] = (48, 96, 192), activation: str = "gelu",
                 bn_momentum: float = 0.4, scale: float = 1 / 9, drop_rate: float = 0.0):
        super().__init__()
        if input_size < 4:
            raise ValueError(f"airnet needs inputs of at least 4x4 pixels (received {input_size})")
        stem = 2 * in_chans * 4  # airbench: twice the patch dimension (c x 2 x 2), for +/- filter pairs
        self.stem = nn.Sequential(Conv(in_chans, stem, 2, padding=0, bias=True), make_act(activation))
        chans = [stem, *widths]
        ceil = input_size < 16  # 8x8 digits: 7 -> 4 -> 2 -> 1 rather than 7 -> 3 -> 1 -> nothing
        self.blocks = nn.Sequential(*[ConvGroup(chans[i], chans[i + 1], activation, bn_momentum, ceil)
                                      for i in range(3)])
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.num_features, self.num_classes, self.scale = widths[-1], num_classes, scale
        self.fc = nn.Linear(widths[-1], num_classes, bias=False) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = scratch_cfg(in_chans, input_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pool(x).flatten(1))
        return x if pre_logits else self.fc(x) * self.scale

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, bias=False) if num_classes > 0 else nn.Identity()


def _widths(alpha: float | None, base: tuple[int, int, int]) -> tuple[int, int, int]:
    a = 1.0 if alpha is None else alpha
    if not 0 < a <= 4:
        raise ValueError(f"alpha (width multiplier) must be in (0, 4] (received {a})")
    return tuple(max(8, round(c * a)) for c in base)  # type: ignore[return-value]


# The speedrun recipe's optimisation without its data-specific parts (flips, the batch of 512, 10 epochs),
# so `daxiao train --model airnet` works on any set; --recipe speedrun sets the rest.
AIRNET_DEFAULTS = {"optimizer": "sgd", "nesterov": True, "momentum": 0.85, "lr": 0.2, "weight_decay": 1e-3,
                   "schedule": "triangle", "batch_size": 128, "epochs": 15, "loss": "label-smoothing=0.2",
                   "lookahead": True}


AIRNET_ARGS = {**{k: v for k, v in declared_args(AirNet).items() if k != "widths"}, "alpha": float}  # widths: by alpha


@register_model("airnet", "small", args=AIRNET_ARGS, defaults=AIRNET_DEFAULTS)
def airnet(pretrained: bool = False, alpha: float | None = None, **kwargs) -> AirNet:
    """airbench's net for CPUs: 3 conv groups 48-96-192; `alpha` scales the widths."""
    if pretrained:
        raise ValueError("airnet has no pretrained weights; train it from scratch (--recipe speedrun)")
    return AirNet(widths=_widths(alpha, (48, 96, 192)), **kwargs)
