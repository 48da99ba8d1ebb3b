"""What a run folder holds while it trains: config.yaml, metrics.csv, last/best weights, resumable state.

`RunWriter` is the callback that writes them; `fit` adds it when given a run folder. Every file goes
through `daxiao.files.atomic_write` (unique temporary name, fsync, rename, fsync of the folder), in an
order chosen so that a kill at any instant leaves a folder `restore` can resume exactly:

    metrics.csv -> last.safetensors -> last.state.safetensors (the commit) -> best.safetensors

The state file is self-contained: the epoch it belongs to, the model's weights of that epoch, optimizer
tensors, scheduler, RNG and loop state, never a pickle. The previous state is kept as
``last.state.prev.safetensors`` (one generation back). On resume, last/best weights that disagree with the
state (a kill between two writes) are rewritten from it; a state that names another run's config is refused.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..config import RunConfig, save_yaml
from ..console import console
from ..errors import DaxiaoError
from ..files import atomic_write
from ..interrupt import note_saved
from ..models.saved import read_description, save_tensors, save_weights
from ..plots import save_confusion_matrix
from . import distributed
from .callbacks import Callback

METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "images_per_s",
                 "epoch_seconds"]
STATE = "last.state.safetensors"
PREV_STATE = "last.state.prev.safetensors"
STATE_KIND = "daxiao-train-state/2"
# What a run writes; --exist-ok removes them before the new run writes its config, so an old run's weights
# never sit beside a new config.
RUN_FILES = ("best.safetensors", "best.json", "last.safetensors", "last.json", STATE, PREV_STATE, "metrics.csv",
             "confusion_matrix.png", "done.json", "distill.json")
# Settings a resumed run may change: how long it runs and where it is, nothing that shapes the model or data.
RESUMABLE_CHANGES = {("train", "epochs"), ("resume",), ("name",), ("project",), ("exist_ok",), ("data", "workers"),
                     ("train", "threads"), ("data", "data_dir")}


def save_train_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                     state: dict, extra: dict | None = None) -> None:
    """The whole resumable state of one epoch as one safetensors file (so it can never be half of two
    epochs): model weights, optimizer tensors and torch RNG as tensors; param groups, scheduler, loop state
    and `extra` as JSON. The previous file is kept one generation back."""
    path = Path(path)
    opt = optimizer.state_dict()
    tensors = {"rng/torch": torch.get_rng_state()}
    tensors.update({f"model/{k}": v for k, v in model.state_dict().items()})
    scalars: dict[str, dict] = {}
    for idx, s in opt["state"].items():
        for k, v in s.items():
            if torch.is_tensor(v):
                tensors[f"opt/{idx}/{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    meta = {"kind": STATE_KIND, "epoch": state["epoch"], "param_groups": opt["param_groups"], "opt_scalars": scalars,
            "scheduler": scheduler.state_dict(), "loop": state, **(extra or {})}
    if path.is_file():  # one generation back, as a hard link: no copy, and `path` itself never goes missing
        prev = path.with_name(PREV_STATE)
        tmp = path.with_name(f".{PREV_STATE}.{os.getpid()}.tmp")
        try:
            tmp.unlink(missing_ok=True)
            os.link(path, tmp)
            os.replace(tmp, prev)
        except OSError:  # a file system without hard links: no previous generation, the commit is still atomic
            tmp.unlink(missing_ok=True)
    _crash_hook("state", state["epoch"])
    save_tensors(tensors, path, meta)


def read_train_state(run: Path) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """(file, description, tensors) of the newest readable state in `run`: the last, else the one before."""
    problems = []
    for name in (STATE, PREV_STATE):
        path = run / name
        if not path.is_file():
            continue
        try:
            meta = read_description(path)
            tensors = load_file(str(path))
        except (DaxiaoError, SafetensorError, OSError) as e:
            problems.append(f"{name}: {str(e)[:100]}")
            continue
        if meta.get("kind") != STATE_KIND or not isinstance(meta.get("epoch"), int) or "rng/torch" not in tensors:
            problems.append(f"{name}: not a daxiao training state of this version")
            continue
        if name == PREV_STATE:
            console.print(f"[yellow]warning:[/] {run / STATE} is unreadable; resuming from the generation before it "
                          f"(epoch {meta['epoch']}).")
        return path, meta, tensors
    why = "; ".join(problems) or f"{STATE} is missing (the run never finished an epoch)"
    raise DaxiaoError(f"Cannot resume {run}: {why}. Start it again with --exist-ok.")


def load_train_state(meta: dict, tensors: dict, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """Put a state read by `read_train_state` back: weights, optimizer, schedule, torch RNG."""
    weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise DaxiaoError(f"Cannot resume: the saved state does not fit this model ({str(e).splitlines()[0][:120]})."
                          ) from None
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


def config_differences(saved: dict, now: dict, prefix: tuple = ()) -> list[str]:
    """Settings (dotted names) that differ between two config dicts, ignoring those a resume may change."""
    out = []
    for k in sorted(set(saved) | set(now)):
        key = (*prefix, k)
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, key)
        elif a != b and key not in RESUMABLE_CHANGES:
            out.append(f"{'.'.join(key)} ({a!r} then, {b!r} now)")
    return out


def _crash_hook(where: str, epoch: int) -> None:
    """Tests kill training inside the checkpoint write: DAXIAO_TEST_PAUSE_IN_WRITE=state (or best) sleeps
    here after epoch DAXIAO_TEST_PAUSE_EPOCH's weights are written, so a SIGKILL lands between two of the
    files (a test-only seam; unset, it does nothing)."""
    if (os.environ.get("DAXIAO_TEST_PAUSE_IN_WRITE") == where
            and os.environ.get("DAXIAO_TEST_PAUSE_EPOCH", str(epoch)) == str(epoch)):
        import time

        Path(os.environ.get("DAXIAO_TEST_PAUSE_FLAG", os.devnull)).touch()
        time.sleep(float(os.environ.get("DAXIAO_TEST_PAUSE_SECONDS", "30")))


def non_finite(model: nn.Module) -> list[str]:
    """Names of parameters or buffers holding NaN or inf (checked once per epoch, before anything is saved)."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]


class RunWriter(Callback):
    """Writes the run folder: config.yaml at the start, metrics and weights after every epoch, the
    confusion matrix of the best weights at the end. Data-parallel, rank 0 alone writes; every rank restores."""

    rank_zero_only = True

    def __init__(self, run_dir: str | Path, cfg: RunConfig, meta: dict):
        self.run, self.cfg, self.meta = Path(run_dir), cfg, meta
        self.bf16: bool | None = None  # the precision the run started with, restored on resume

    def restore(self, model: nn.Module, optimizer, scheduler, scaler=None) -> dict:
        """Weights, optimizer, schedule, RNG and loop state exactly as they were after the last saved epoch;
        last/best weights that disagree with that state (a kill between two writes) are rewritten from it."""
        path, meta, tensors = read_train_state(self.run)
        loop = meta["loop"]
        if loop.get("epoch") != meta["epoch"]:
            raise DaxiaoError(f"Cannot resume: {path} names epoch {meta['epoch']} but holds the loop state of epoch "
                              f"{loop.get('epoch')}; start the run again with --exist-ok.")
        if isinstance(meta.get("config"), dict) and (diff := config_differences(meta["config"], self.cfg.to_dict())):
            raise DaxiaoError(f"Cannot resume {self.run}: its saved state was trained with other settings "
                              f"({'; '.join(diff[:3])}); config.yaml was changed. Restore it, or start a new run.")
        load_train_state(meta, tensors, model, optimizer, scheduler)
        if scaler is not None and meta.get("grad_scaler"):  # fp16's loss scale and growth tracker
            scaler.load_state_dict(meta["grad_scaler"])
        self.bf16 = meta.get("bf16")
        epoch, best_epoch = meta["epoch"], loop["best_epoch"]
        self._repair("last.safetensors", epoch, epoch, model, loop)
        best = self.run / "best.safetensors"
        if best_epoch == epoch:
            self._repair("best.safetensors", epoch, best_epoch, model, loop)
        elif not best.is_file() or _epoch_of(best) != best_epoch:
            raise DaxiaoError(f"Cannot resume {self.run}: best.safetensors is from epoch {_epoch_of(best)} but the "
                              f"saved state's best is epoch {best_epoch}; the folder was changed by hand. Start again "
                              "with --exist-ok.")
        distributed.broadcast(None)  # a barrier: every rank reads best only after rank 0's repair
        keep = ("epoch", "history", "best_val_acc", "best_epoch")
        return {**{k: loop[k] for k in keep}, "best_state": load_file(str(best))}

    def _repair(self, name: str, want: int, epoch: int, model: nn.Module, loop: dict) -> None:
        path = self.run / name
        if path.is_file() and _epoch_of(path) == want:
            return
        if not distributed.is_rank_zero():  # rank 0 rewrites it; the others hold the same weights already
            return
        console.print(f"[yellow]note:[/] {path} was not from epoch {want} (the run was killed while saving); "
                      "rewritten from the saved state.")
        row = loop["history"][epoch - 1] if 0 < epoch <= len(loop["history"]) else {}
        save_weights(model, path, self._meta(epoch, row.get("val_acc") if row.get("val_acc") != "" else None))

    def _meta(self, epoch: int, val_acc) -> dict:
        return {**self.meta, "epoch": epoch, "val_acc": val_acc, "config": self.cfg.to_dict()}

    def on_train_begin(self, logs=None):
        self.run.mkdir(parents=True, exist_ok=True)
        if not self.cfg.resume:  # --exist-ok: the old run's files go before the new config arrives
            for name in RUN_FILES:
                (self.run / name).unlink(missing_ok=True)
        save_yaml(self.cfg, self.run / "config.yaml")

    def on_epoch_end(self, epoch, logs=None):
        s, loop = self.session, self.session.state
        if bad := non_finite(s.model):  # never write NaN weights over the last good ones
            raise DaxiaoError(f"epoch {epoch + 1}: weights became NaN or inf ({', '.join(bad[:3])}); the run folder "
                              "keeps the last good epoch. Lower the learning rate (--lr) and start again.")
        buf = io.StringIO()
        w = csv.DictWriter(buf, METRIC_FIELDS)
        w.writeheader()
        w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in loop.history)
        atomic_write(self.run / "metrics.csv", buf.getvalue())
        meta = self._meta(loop.epoch, logs.get("val_accuracy"))
        save_weights(s.model, self.run / "last.safetensors", meta)
        save_train_state(self.run / STATE, s.model, s.optimizer, s.scheduler, loop.to_json(),
                         {"config": self.cfg.to_dict(), "bf16": s.bf16,
                          **({"grad_scaler": s.scaler.state_dict()} if getattr(s, "scaler", None) else {})})
        note_saved(self.run, f"epoch {loop.epoch}")  # committed: resuming continues after this epoch
        _crash_hook("best", loop.epoch)
        if logs.get("improved"):
            save_weights(s.model, self.run / "best.safetensors", meta)

    def on_train_end(self, logs=None):
        s = self.session
        if s.val_loader is None:
            return
        va = s.evaluate(collect=True)
        save_confusion_matrix(va["labels"], va["probs"].argmax(1), s.classes, self.run / "confusion_matrix.png",
                              title=f"{self.meta['model']} - val acc {va['acc']:.4f} (best epoch {s.state.best_epoch})")


def _epoch_of(path: Path) -> int | None:
    try:
        return read_description(path).get("epoch")
    except DaxiaoError:
        return None
