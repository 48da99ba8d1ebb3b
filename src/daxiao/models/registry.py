"""The model registry: a decorator and a dict. It imports no model file (as timm's `_registry.py`):
each family file registers its entry points here when `daxiao.models` imports it, and
`daxiao.models.factory` looks them up."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
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
    # More defaults, only for training from random weights (no --pretrained, no --weights): what an
    # ImageNet-style net needs to learn a small set from scratch. Transfer keeps the plain defaults, since
    # a frozen base's features are cached from unaugmented images.
    scratch_defaults: dict = field(default_factory=dict)
    # Built-in sets smaller than this many pixels per side are upscaled to it unless --image-size says
    # otherwise: an ImageNet-style network halves its input five times (digits are 8x8).
    min_image_size: int | None = None
    # The keyword arguments the entry accepts, with their types: create_model refuses any other, and a
    # weights file's model_args are checked against them before anything is built (never passed on unchecked).
    args: Mapping[str, type] = field(default_factory=dict)


def declared_args(spec: Callable | Mapping[str, type], exclude: tuple[str, ...] = ("self", "pretrained", "version")
                  ) -> dict[str, type]:
    """{name: type} of a family's options: a mapping as given, or read from a class's or function's signature
    (its annotated keyword parameters; ``**kwargs`` is never an option)."""
    if isinstance(spec, Mapping):
        return dict(spec)
    fn = spec.__init__ if inspect.isclass(spec) else spec
    hints = typing.get_type_hints(fn)
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in exclude or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        out[name] = _base_type(hints.get(name, type(p.default)))
    return out


def _base_type(hint) -> type:
    """`int | None` -> int: the type a non-empty value must have."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


_MODELS: dict[str, ModelInfo] = {}

def scratch(**defaults) -> dict:
    """register_model's keywords for an ImageNet-style network: built-in sets below 32 px upscaled to 32, so
    five stride-2 stages still see more than one pixel; from scratch, light augmentation and 20 epochs
    (with Keras' plain 10, mobilenet-v1 overfits 1.4k digits: train 1.00, test 0.908; these reach 0.972),
    and any family-specific `defaults` on top. Measured: benchmarks/defaults.py, README's models table."""
    return {"min_image_size": 32, "scratch_defaults": {"augment": "light", "epochs": 20, **defaults}}


SCRATCH = scratch()
# timm's inverted-residual nets (MobileNetV2/V3, EfficientNet-Lite): at adam 1e-3 they underfit 1.4k digits in
# 20 epochs (mobilenetv2 train 0.80, val 0.84); 3e-3 reached val 0.993 and 1e-2 0.986.
MOBILE_SCRATCH = scratch(lr=3e-3)
# SqueezeNet has no BatchNorm and ends in conv -> ReLU -> average: adam 1e-3 killed squeezenet1_0 in its first
# epoch (every class's ReLU at 0, accuracy 0.10) and nearly killed 1_1 (val 0.78). On 1_1, 3e-4 reached val
# 0.979, 1e-4 0.910; 3e-3 with 2 warm-up epochs and SGD 0.05 died too.
SQUEEZE_SCRATCH = scratch(lr=3e-4)
# squeezenet1_0 (2.3x the MACs of 1_1) at 3e-4 still spends 6 of 20 epochs near the dead point (val 0.15-0.21)
# and ends at val 0.910: it gets 30 epochs.
SQUEEZE_1_0_SCRATCH = scratch(lr=3e-4, epochs=30)


def register_model(family: str, size: str, name: str | None = None, args: Callable | Mapping[str, type] | None = None,
                   defaults: dict | None = None, min_image_size: int | None = None,
                   scratch_defaults: dict | None = None):
    """Register an entry point as `name`, by default its function name with '_' spelled '-'.

    `size` is the article's camp, "small" (MobileNet, SqueezeNet) or "big" (the DNN, pretrained backbones).
    `args` declares the options it takes: the class it builds (its ``__init__`` signature is read), or a
    {name: type} mapping; by default the entry function's own signature. `defaults`, `scratch_defaults`
    and `min_image_size`: see `ModelInfo`.
    """
    assert size in ("small", "big"), size

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__.replace("_", "-")
        if key in _MODELS:
            raise ValueError(f"Model {key!r} is registered twice")
        _MODELS[key] = ModelInfo(key, family, size, fn, (fn.__doc__ or "").strip(), dict(defaults or {}),
                                 dict(scratch_defaults or {}), min_image_size, declared_args(args or fn))
        return fn

    return wrap
