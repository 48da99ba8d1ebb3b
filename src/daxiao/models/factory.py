"""`create_model`, `list_models` and `model_info`: the zoo's front door, with errors that help.

Importing this module imports every family file, so the registry is full before the first lookup.
Any timm model is reachable as ``timm:<name>``.
"""

from __future__ import annotations

from torch import nn

from ..errors import DaxiaoError, did_you_mean
from . import airnet, mobilenet_v1, seed_cnn, squeezenet, timm_zoo  # noqa: F401  (importing registers the families)
from .head import HEAD_ARGS, with_head
from .registry import _MODELS, ModelInfo
from .timm_zoo import create_timm


def list_models() -> list[str]:
    """Names of the registered zoo, in registration order (``timm:<name>`` reaches the rest)."""
    return list(_MODELS)


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; ``timm:<name>`` gets an ad-hoc entry."""
    if name.startswith("timm:"):
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
            with a transfer-learning head on the pooled features (`daxiao.models.head.TransferModel`).

    Returns:
        An ``nn.Module`` with the timm interface: ``num_classes``, ``num_features``,
        ``forward_features``, ``forward_head``, ``reset_classifier`` and ``pretrained_cfg``.

    Example:
        >>> model = create_model("seed-cnn", num_classes=10, in_chans=1, input_size=28)
    """
    info = model_info(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # None from the CLI = the model's default
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
