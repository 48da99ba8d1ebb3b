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
from .timm_zoo import TIMM_ARGS, create_timm

HEAD_TYPES = {"head": str, "head_hidden": int, "head_dropout": float}


def list_models() -> list[str]:
    """Names of the registered zoo, in registration order (``timm:<name>`` reaches the rest)."""
    return list(_MODELS)


def model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; ``timm:<name>`` gets an ad-hoc entry."""
    if name.startswith("timm:"):
        return ModelInfo(name, "timm", "big", lambda **kw: create_timm(name[5:], **kw), "any timm model",
                         args=TIMM_ARGS)
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
    check_args(info, kwargs)
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


def accepted_args(info: ModelInfo) -> dict[str, type]:
    """{option: type} that `info`'s entry takes through create_model (the family's own, and the head's)."""
    return {**info.args, **HEAD_TYPES}


def check_args(info: ModelInfo, kwargs: dict, where: str = "") -> None:
    """Refuse an option the entry does not declare, or a value of the wrong type, in one line naming it.
    Nothing undeclared ever reaches a family (timm.create_model would take a URL or a file to read)."""
    allowed = accepted_args(info)
    for key, value in kwargs.items():
        if key not in allowed:
            raise DaxiaoError(f"{where}model {info.name!r} takes no option {key!r} (it takes "
                              f"{', '.join(sorted(allowed))}).{did_you_mean(key, allowed)}")
        want = allowed[key]
        number = (int, float) if want is float else want  # an int is a fine float (drop_rate: 0)
        ok = isinstance(value, number) and (want is bool or not isinstance(value, bool))
        if not ok:
            raise DaxiaoError(f"{where}model option {key} must be {want.__name__} (received {type(value).__name__} "
                              f"{str(value)[:40]!r}).")
