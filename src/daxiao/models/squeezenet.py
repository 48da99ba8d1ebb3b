"""SqueezeNet — Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
<0.5MB model size", 2016 (https://arxiv.org/abs/1602.07360).

The real thing: Fire modules (a 1x1 "squeeze" conv feeding parallel 1x1 and 3x3 "expand" convs whose
outputs are concatenated), taken from torchvision's definitions. The seed article's code uses a
squeeze-excitation layer instead, which is a different idea (channel attention, SENet).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import hub_download, is_small, scratch_cfg
from .registry import SQUEEZE_1_0_SCRATCH, SQUEEZE_SCRATCH, register_model

# torchvision and timm are imported where a SqueezeNet is built: importing either costs seconds of
# start-up (torchvision's ops pull in torch._dynamo), which every `daxiao` command would otherwise pay.
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)  # timm.data's constants, the weights' normalization
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


class SqueezeNet(nn.Module):
    """torchvision's SqueezeNet behind the zoo's interface (features / head / reset_classifier)."""

    def __init__(self, version: str = "1_1", num_classes: int = 1000, in_chans: int = 3, input_size: int = 224,
                 drop_rate: float = 0.5, pretrained: bool = False):
        super().__init__()
        import torchvision
        from timm.models import adapt_input_conv

        builder = getattr(torchvision.models, f"squeezenet{version}")
        if pretrained:
            with hub_download(f"squeezenet{version}"):
                net = builder(weights="DEFAULT")
        else:
            net = builder(num_classes=max(num_classes, 1))
        self.features = net.features
        stem: nn.Conv2d = self.features[0]
        small = is_small(input_size)
        if in_chans != 3 or small:
            k = stem.kernel_size[0]
            new = nn.Conv2d(in_chans, stem.out_channels, k, stride=1 if small else 2, padding=k // 2 if small else 0)
            if pretrained:  # keep the ImageNet filters; a grey input gets their sum over RGB (timm's rule)
                with torch.no_grad():
                    new.weight.copy_(adapt_input_conv(in_chans, stem.weight))
                    new.bias.copy_(stem.bias)
            self.features[0] = new
            if small:  # stride-1 stem and no stem max-pool: an 8x8 or 28x28 input keeps its detail
                self.features[2] = nn.Identity()
        self.num_features = 512
        self.drop = nn.Dropout(drop_rate)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        if pretrained and num_classes == 1000:
            self.final_conv = net.classifier[1]
        else:
            self.reset_classifier(num_classes)
        self.pretrained_cfg = scratch_cfg(in_chans, input_size)
        if pretrained:
            self.pretrained_cfg.update(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits or self.num_classes == 0:
            return self.pool(x).flatten(1)
        # SqueezeNet's classifier is a 1x1 conv + ReLU per position, then the average over positions.
        return self.pool(torch.relu(self.final_conv(self.drop(x)))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.final_conv

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.final_conv = nn.Conv2d(self.num_features, num_classes, 1) if num_classes > 0 else nn.Identity()
        if num_classes > 0:  # torchvision's init for this layer
            nn.init.normal_(self.final_conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(self.final_conv.bias)


@register_model("squeezenet", "small", name="squeezenet1_0", args=SqueezeNet, **SQUEEZE_1_0_SCRATCH)
def squeezenet1_0(pretrained: bool = False, **kwargs) -> SqueezeNet:
    """Fire modules, 7x7 stem (torchvision)."""
    return SqueezeNet("1_0", pretrained=pretrained, **kwargs)


@register_model("squeezenet", "small", name="squeezenet1_1", args=SqueezeNet, **SQUEEZE_SCRATCH)
def squeezenet1_1(pretrained: bool = False, **kwargs) -> SqueezeNet:
    """Fire modules, 3x3 stem, 2.4x fewer MACs than 1.0."""
    return SqueezeNet("1_1", pretrained=pretrained, **kwargs)
