"""Saved models: safetensors with their description inside (and beside, as JSON), never pickle.

A weights file carries, in its safetensors metadata under ``daxiao``, everything needed to rebuild and
use the model: registry name and arguments, class names, preprocessing. A copied ``best.safetensors``
therefore works on its own. `load_run` is the one way back from a file or run folder to a model: every
reader (evaluate, predict, profile, compare, distill, embed, export, serve) goes through it. Resumable
training state (optimizer, scheduler, RNG) is the training layer's (`daxiao.training.checkpoint`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from ..config import RunConfig
from ..data.preprocess import Preprocess
from ..errors import DaxiaoError
from ..files import atomic_write, atomic_write_json
from .factory import create_model

FORMAT = "daxiao/1"


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, meta: dict) -> None:
    """Tensors plus `meta` (under ``daxiao``) as one safetensors file, written atomically."""
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata={"daxiao": json.dumps(meta)})
    atomic_write(path, data)


def save_weights(model: nn.Module, path: str | Path, meta: dict) -> None:
    """Save `model`'s weights with `meta` (see `model_meta`) inside, and `meta` as `<path>.json` beside."""
    path = Path(path)
    state = model.state_dict()
    save_tensors(state, path, {"format": FORMAT, **meta})
    atomic_write_json(path.with_suffix(".json"), {"format": FORMAT, **meta})


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
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DaxiaoError(f"{path} is corrupt or not a safetensors file ({str(e)[:80]}).") from None
    if "daxiao" not in meta:
        raise DaxiaoError(f"{path} is a safetensors file but not daxiao weights (no daxiao description inside); "
                          "use weights written by `daxiao train`.")
    return json.loads(meta["daxiao"])


@dataclass
class LoadedRun:
    """A trained model and everything needed to use it, read from one weights file."""

    model: nn.Module               # in eval mode, on the CPU
    preprocess: Preprocess         # exactly what training applied
    classes: list[str]
    meta: dict                     # the file's whole description (model, model_args, epoch, val_acc ...)
    path: Path                     # the weights file read
    config: RunConfig | None = field(default=None)  # the run's resolved config, where the file carries it

    @property
    def name(self) -> str:
        return self.meta["model"]

    @property
    def data(self) -> str | None:
        """The data the model was trained on, as the run's config names it."""
        return self.config.data.data if self.config else None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        p = self.preprocess
        return (p.channels, p.image_size, p.image_size)


def load_run(path: str | Path) -> LoadedRun:
    """Rebuild the model in a daxiao weights file, or in a run folder's best (else last) weights.

    Example:
        >>> run = load_run("runs/seed-cnn-digits")
        >>> run.model(run.preprocess.normalize(images)).argmax(1)
    """
    path = resolve_weights(path)
    meta = read_meta(path)
    model = create_model(meta["model"], **meta["model_args"])
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, SafetensorError) as e:
        raise DaxiaoError(f"{path} does not match model {meta['model']!r}: {str(e).splitlines()[0][:160]}") from None
    config = RunConfig.from_dict(meta["config"]) if isinstance(meta.get("config"), dict) else None
    return LoadedRun(model.eval(), Preprocess(**meta["preprocess"]), list(meta["classes"]), meta, path, config)


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, meta): `load_run` for callers that want the two parts."""
    run = load_run(path)
    return run.model, run.meta


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
