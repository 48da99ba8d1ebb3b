"""The model registry: a decorator and a dict. It imports no model file (as timm's `_registry.py`):
each family file registers its entry points here when `daxiao.models` imports it, and
`daxiao.models.factory` looks them up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    size: str  # "small" or "big": the article's two camps
    fn: Callable[..., nn.Module]
    description: str = ""
    # The model's own training defaults (config keys, e.g. {"lr": 3e-3, "epochs": 20}): they replace the
    # dataclass defaults beneath any recipe, YAML file or flag, where one recipe does not fit every family.
    defaults: dict = field(default_factory=dict)
    # Built-in sets smaller than this many pixels per side are upscaled to it unless --image-size says
    # otherwise: an ImageNet-style network halves its input five times (digits are 8x8).
    min_image_size: int | None = None


_MODELS: dict[str, ModelInfo] = {}

# ImageNet-style networks trained from scratch on the small built-in sets: digits (8x8) upscaled to 32x32,
# so five stride-2 stages still see more than one pixel; measured on digits: README's models table.
SCRATCH: dict = {"min_image_size": 32}


def register_model(family: str, size: str, name: str | None = None, defaults: dict | None = None,
                   min_image_size: int | None = None):
    """Register an entry point as `name`, by default its function name with '_' spelled '-'.

    `size` is the article's camp, "small" (MobileNet, SqueezeNet) or "big" (the DNN, pretrained backbones).
    `defaults` and `min_image_size`: see `ModelInfo`.
    """
    assert size in ("small", "big"), size

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__.replace("_", "-")
        if key in _MODELS:
            raise ValueError(f"Model {key!r} is registered twice")
        _MODELS[key] = ModelInfo(key, family, size, fn, (fn.__doc__ or "").strip(), dict(defaults or {}),
                                 min_image_size)
        return fn

    return wrap
