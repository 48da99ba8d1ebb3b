"""The model registry: a decorator, a dict, and `create_model` with an error that helps.

Importing `daxiao.models` imports each family file, and each file registers its entry points here
(the timm pattern). Any timm model is reachable as ``timm:<name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .errors import DaxiaoError, did_you_mean


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


def list_models() -> list[str]:
    """Names of the registered zoo, in registration order (``timm:<name>`` reaches the rest)."""
    _ensure_loaded()
    return list(_MODELS)


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; ``timm:<name>`` gets an ad-hoc entry."""
    _ensure_loaded()
    if name.startswith("timm:"):
        from .models.timm_zoo import create_timm

        return ModelInfo(name, "timm", "big", lambda **kw: create_timm(name[5:], **kw), "any timm model")
    if name not in _MODELS:
        alias = name.replace("_", "-")
        if alias in _MODELS:
            return _MODELS[alias]
        raise DaxiaoError(
            f"Unknown model {name!r}.{did_you_mean(name, _MODELS) or ' '} "
            "See `daxiao models`, or use any timm model as timm:<name>."
        )
    return _MODELS[name]


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a model by name.

    Args:
        name: a zoo name (``seed-cnn``, ``mobilenet-v1``, ``resnet18`` ...) or ``timm:<any timm name>``.
        pretrained: load ImageNet weights where the family has them.
        **kwargs: ``num_classes``, ``in_chans``, ``input_size`` (side in pixels; picks the stem),
            and family options such as ``activation`` or ``alpha``. ``None`` values mean "the default".
            ``head="article"|"linear"`` (with ``head_hidden``, ``head_dropout``) replaces the classifier
            with a transfer-learning head on the pooled features (`daxiao.transfer.TransferModel`).

    Returns:
        An ``nn.Module`` with the timm interface: ``num_classes``, ``num_features``,
        ``forward_features``, ``forward_head``, ``reset_classifier`` and ``pretrained_cfg``.

    Example:
        >>> model = create_model("seed-cnn", num_classes=10, in_chans=1, input_size=28)
    """
    info = model_info(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None from the CLI = the model's default
    from .transfer import HEAD_ARGS, with_head  # a new head (transfer learning) wraps any family

    head = {k: kwargs.pop(k) for k in HEAD_ARGS if k in kwargs}
    try:
        model = info.fn(pretrained=pretrained, **kwargs)
    except DaxiaoError:
        raise
    except (TypeError, ValueError) as e:  # an option the family lacks, or a value it refuses
        raise DaxiaoError(f"Cannot build {name!r} with {kwargs}: {e}") from None
    if head.get("head"):
        model = with_head(model, **head)
    model.daxiao_name, model.daxiao_args = name, {**kwargs, **head}  # recorded with the weights, to rebuild it
    return model


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (importing registers the families)
