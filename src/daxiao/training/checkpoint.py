"""What a run folder holds while it trains: config.yaml, metrics.csv, last/best weights, resumable state.

`RunWriter` is the callback that writes them; `fit` adds it when given a run folder. Resumable state
(optimizer tensors, scheduler, RNG, loop state) goes in ``last.state.safetensors``, never a pickle.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..config import RunConfig, save_yaml
from ..errors import DaxiaoError
from ..files import atomic_write
from ..models.saved import read_meta, save_tensors, save_weights
from ..plots import save_confusion_matrix
from .callbacks import Callback

METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "images_per_s",
                 "epoch_seconds"]


def save_train_state(path: str | Path, optimizer: torch.optim.Optimizer, scheduler, state: dict,
                     scaler: torch.amp.GradScaler | None = None) -> None:
    """Optimizer tensors + torch RNG as tensors; param groups, scheduler, fp16's loss scale and loop state
    as JSON."""
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
    if scaler is not None:  # scale and growth tracker: plain numbers
        meta["grad_scaler"] = scaler.state_dict()
    save_tensors(tensors, Path(path), meta)


def load_train_state(path: str | Path, optimizer: torch.optim.Optimizer, scheduler,
                     scaler: torch.amp.GradScaler | None = None) -> dict:
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
    if scaler is not None and meta.get("grad_scaler"):
        scaler.load_state_dict(meta["grad_scaler"])
    torch.set_rng_state(tensors["rng/torch"])
    return meta


class RunWriter(Callback):
    """Writes the run folder: config.yaml at the start, metrics and weights after every epoch, the
    confusion matrix of the best weights at the end. Data-parallel, rank 0 alone writes; every rank restores."""

    rank_zero_only = True

    def __init__(self, run_dir: str | Path, cfg: RunConfig, meta: dict):
        self.run, self.cfg, self.meta = Path(run_dir), cfg, meta

    def restore(self, model: nn.Module, optimizer, scheduler, scaler=None) -> dict:
        """Weights, optimizer, schedule, loss scale, RNG and loop state exactly as they were after the last epoch."""
        state = load_train_state(self.run / "last.state.safetensors", optimizer, scheduler, scaler)
        model.load_state_dict(load_file(str(self.run / "last.safetensors")))
        loop = {k: state[k] for k in ("epoch", "history", "best_val_acc", "best_epoch")}
        return {**loop, "best_state": load_file(str(self.run / "best.safetensors"))}

    def on_train_begin(self, logs=None):
        self.run.mkdir(parents=True, exist_ok=True)
        save_yaml(self.cfg, self.run / "config.yaml")

    def on_epoch_end(self, epoch, logs=None):
        s, loop = self.session, self.session.state
        buf = io.StringIO()
        w = csv.DictWriter(buf, METRIC_FIELDS)
        w.writeheader()
        w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in loop.history)
        atomic_write(self.run / "metrics.csv", buf.getvalue())
        meta = {**self.meta, "epoch": loop.epoch, "val_acc": logs.get("val_accuracy"), "config": self.cfg.to_dict()}
        save_weights(s.model, self.run / "last.safetensors", meta)
        if logs.get("improved"):
            save_weights(s.model, self.run / "best.safetensors", meta)
        save_train_state(self.run / "last.state.safetensors", s.optimizer, s.scheduler, loop.to_json(),
                         getattr(s, "scaler", None))

    def on_train_end(self, logs=None):
        s = self.session
        if s.val_loader is None:
            return
        va = s.evaluate(collect=True)
        save_confusion_matrix(va["labels"], va["probs"].argmax(1), s.classes, self.run / "confusion_matrix.png",
                              title=f"{self.meta['model']} - val acc {va['acc']:.4f} (best epoch {s.state.best_epoch})")
