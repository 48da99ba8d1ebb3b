"""The model registry: a decorator and a dict. It imports no model file (as timm's `_registry.py`):
each family file registers its entry points here when `daxiao.models` imports it, and
`daxiao.models.factory` looks them up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    size: str  # "small" or "big": the article's two camps
    fn: Callable[..., nn.Module]
    description: str = ""


_MODELS: dict[str, ModelInfo] = {}


def register_model(family: str, size: str, name: str | None = None):
    """Register an entry point as `name`, by default its function name with '_' spelled '-'.

    `size` is the article's camp, "small" (MobileNet, SqueezeNet) or "big" (the DNN, pretrained backbones).
    """
    assert size in ("small", "big"), size

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__.replace("_", "-")
        if key in _MODELS:
            raise ValueError(f"Model {key!r} is registered twice")
        _MODELS[key] = ModelInfo(key, family, size, fn, (fn.__doc__ or "").strip())
        return fn

    return wrap
