"""Weights as safetensors with their description inside (and beside, as JSON), never pickle.

A weights file carries, in its safetensors metadata under ``daxiao``, everything needed to rebuild and
use the model: registry name and arguments, class names, preprocessing. A copied ``best.safetensors``
therefore works on its own. Resumable training state (optimizer, scheduler, RNG, epoch) goes in
``last.state.safetensors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .data.preprocess import Preprocess
from .errors import DaxiaoError
from .registry import create_model

FORMAT = "daxiao/1"


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, meta: dict) -> None:
    """Write next to the target and rename, so an interrupted save never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={"daxiao": json.dumps(meta)})
    os.replace(tmp, path)


def save_weights(model: nn.Module, path: str | Path, meta: dict) -> None:
    """Save `model`'s weights with `meta` (see `model_meta`) inside, and `meta` as `<path>.json` beside."""
    path = Path(path)
    state = model.state_dict()
    _atomic_save(state, path, {"format": FORMAT, **meta})
    path.with_suffix(".json").write_text(json.dumps({"format": FORMAT, **meta}, indent=2))


def model_meta(model: nn.Module, classes: list[str], preprocess: Preprocess, **extra) -> dict:
    """What rebuilding and using `model` needs: registry name and arguments, classes, preprocessing."""
    if not hasattr(model, "daxiao_name"):
        raise DaxiaoError("Only models built by daxiao.create_model can be saved with their description; "
                          "pass run_dir=None to fit() to train another model without writing a run folder.")
    args = {**getattr(model, "daxiao_args", {}), "num_classes": model.num_classes}
    return {"model": model.daxiao_name, "model_args": args, "classes": list(classes),
            "preprocess": preprocess.to_dict(), **extra}


def read_meta(path: str | Path) -> dict:
    """The daxiao description stored in a weights file; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DaxiaoError(f"No such weights file: {path}.")
    if path.suffix != ".safetensors":
        raise DaxiaoError(f"{path} is not a .safetensors file; daxiao weights are <run>/best.safetensors.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DaxiaoError(f"{path} is corrupt or not a safetensors file ({str(e)[:80]}).") from None
    if "daxiao" not in meta:
        raise DaxiaoError(f"{path} is a safetensors file but not daxiao weights (no daxiao description inside); "
                          "use weights written by `daxiao train`.")
    return json.loads(meta["daxiao"])


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the model described in a daxiao weights file (or a run folder's best weights).

    Returns:
        (model in eval mode, meta) where meta holds ``classes`` and ``preprocess``.
    """
    path = resolve_weights(path)
    meta = read_meta(path)
    model = create_model(meta["model"], **meta["model_args"])
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, SafetensorError) as e:
        raise DaxiaoError(f"{path} does not match model {meta['model']!r}: {str(e).splitlines()[0][:160]}") from None
    return model.eval(), meta


def resolve_weights(path: str | Path) -> Path:
    """A run folder means its best.safetensors (else last.safetensors)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / name).is_file():
                return p / name
        raise DaxiaoError(f"{p} holds no best.safetensors or last.safetensors; is it a daxiao run folder?")
    if not p.exists():
        raise DaxiaoError(f"No such run folder or weights file: {p}.")
    return p


# ---- resumable training state --------------------------------------------------------------------
def save_train_state(path: str | Path, optimizer: torch.optim.Optimizer, scheduler, state: dict) -> None:
    """Optimizer tensors + torch RNG as tensors; param groups, scheduler and loop state as JSON."""
    opt = optimizer.state_dict()
    tensors = {"rng/torch": torch.get_rng_state()}
    scalars: dict[str, dict] = {}
    for idx, s in opt["state"].items():
        for k, v in s.items():
            if torch.is_tensor(v):
                tensors[f"opt/{idx}/{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    meta = {"param_groups": opt["param_groups"], "opt_scalars": scalars,
            "scheduler": scheduler.state_dict(), **state}
    _atomic_save(tensors, Path(path), meta)


def load_train_state(path: str | Path, optimizer: torch.optim.Optimizer, scheduler) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DaxiaoError(f"Cannot resume: {path} is missing (the run never finished an epoch).")
    tensors = load_file(str(path))
    meta = read_meta(path)
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, s in meta["opt_scalars"].items():
        state.setdefault(int(idx), {}).update(s)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng/torch"])
    return meta
