"""`fit`: Keras' `model.fit`, for any torch model, on arrays, built-in sets, folders or a loaded bundle.

    history = daxiao.fit(model, x_train, y_train, epochs=5, validation_split=0.1)
    history.history["val_accuracy"]

Settings come from a `RunConfig` and/or keyword overrides with the CLI's names (``batch_size=32``,
``optimizer="adam"``, ``lr=1e-3``); `optimizer=` and `loss=` also take a `torch.optim.Optimizer` or a
loss module, used as given.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..config import DataConfig, RunConfig, apply_overrides
from ..console import console, escape
from ..data import DataBundle, bundle_from_arrays, load_data
from ..errors import DaxiaoError
from ..files import FolderLock
from ..models.saved import model_meta
from . import distributed
from .callbacks import Callback, CallbackList, EarlyStopping, History, ProgressBar, RankSeed
from .checkpoint import RunWriter
from .ema import Lookahead
from .loop import LoopState, run
from .precision import deterministic, torch_threads
from .session import Session, prepare


def fit(model: nn.Module, x=None, y=None, *, cfg: RunConfig | None = None, run_dir: str | Path | None = None,
        verbose: bool | int = True, callbacks: list[Callback] | None = None,
        optimizer: str | torch.optim.Optimizer | None = None, loss: str | nn.Module | None = None,
        validation_split: float = 0.0, validation_data: tuple | None = None, **overrides) -> History:
    """Train `model` and return its `History` (Keras' object: ``.history["val_accuracy"]``, ``.epoch``).

    Args:
        model: any ``nn.Module`` giving logits; one from `create_model` can also write a run folder.
        x: images as an array or tensor (NHWC as Keras has them, NCHW, (N, H, W), or flat square rows),
            with labels `y` (class indices or one-hot); or a built-in name, folder or CSV path (loaded at
            the model's input size); or a `DataBundle`.
        cfg: a full `RunConfig`; keyword overrides (``epochs=5, batch_size=32``) are applied on top.
        run_dir: folder for config.yaml, metrics.csv, best/last weights and the confusion matrix;
            None keeps everything in memory. With ``cfg.resume`` training continues from its last epoch.
        verbose: a progress bar and one line per epoch on stderr (Keras' verbose=1); 0/False is silent.
        callbacks: `daxiao.Callback` instances, called after daxiao's own (see `daxiao.training.callbacks`).
        optimizer: a name (adam, adamw, sgd, rmsprop) or an optimizer over `model`'s parameters. A given
            optimizer keeps its own learning rate: the schedule is constant unless one is configured.
        loss: a name (Keras' too: "sparse_categorical_crossentropy") or a module taking (logits, targets).
        validation_split, validation_data: Keras' meanings, for arrays: the last fraction of x held out
            before shuffling, or an (x_val, y_val) pair. Without either, arrays train with no validation.

    Returns:
        `History`; also a mapping with "history" (per-epoch rows as in metrics.csv), "best_val_acc",
        "best_epoch", "train_seconds", "run_dir", "classes", "preprocess". `model` holds the best epoch's
        weights afterwards (by val accuracy; the last epoch's without validation).

    Example:
        >>> model = create_model("seed-cnn", num_classes=10, in_chans=1, input_size=8)
        >>> fit(model, x_train, y_train, epochs=5).history["accuracy"][-1] > 0.9
    """
    if isinstance(y, RunConfig):  # fit(model, data, cfg): the settings given where labels would go
        cfg, y = y, None
    if isinstance(optimizer, str):
        overrides["optimizer"] = optimizer
    if isinstance(loss, str):
        overrides["loss"] = loss
    if isinstance(optimizer, torch.optim.Optimizer) and cfg is None:
        overrides.setdefault("schedule", "constant")  # Keras: the optimizer's learning rate, unscheduled
    cfg = apply_overrides(copy.deepcopy(cfg) if cfg else RunConfig(), overrides).validate()
    bundle = _bundle(model, x, y, cfg, validation_split, validation_data)
    given_opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
    given_loss = loss if isinstance(loss, nn.Module) or (callable(loss) and not isinstance(loss, str)) else None
    with torch_threads(distributed.per_process_threads(cfg.train.threads)), deterministic(cfg.train.deterministic):
        s = prepare(model, bundle, cfg, optimizer=given_opt, criterion=_as_module(given_loss))
        return fit_session(s, bundle, cfg, run_dir, verbose, callbacks)


def fit_session(s: Session, bundle: DataBundle, cfg: RunConfig, run_dir: str | Path | None = None,
                verbose: bool | int = True, callbacks: list[Callback] | None = None) -> History:
    """The epochs of a prepared session, with daxiao's callbacks (history, progress, run folder, early
    stopping) before the caller's."""
    # One process per run folder: a second one gets one line instead of renaming its files over ours.
    # Under torchrun rank 0 holds it for the job (it alone writes), and a folder in use stops every rank.
    if not run_dir:
        return _fit_locked(s, bundle, cfg, run_dir, verbose, callbacks)
    lock = FolderLock(run_dir, "Run folder")
    distributed.on_rank_zero(lambda: lock.acquire() and None)
    try:
        if lock.took_over and verbose:
            console.print(f"[dim]took over the lock of {run_dir}, left by process {lock.took_over.get('pid')} "
                          "which is no longer running[/]")
        return _fit_locked(s, bundle, cfg, run_dir, verbose, callbacks)
    finally:
        lock.release()  # a no-op on the ranks that never held it


def _fit_locked(s: Session, bundle: DataBundle, cfg: RunConfig, run_dir: str | Path | None, verbose: bool | int,
                callbacks: list[Callback] | None) -> History:
    t, model = cfg.train, s.model
    writer = RunWriter(run_dir, cfg, model_meta(model, bundle.classes, s.preprocess)) if run_dir else None
    if writer and cfg.resume:
        s.state = LoopState(**writer.restore(model, s.optimizer, s.scheduler, s.scaler))
        if writer.bf16 is not None:
            s.bf16 = writer.bf16  # the precision the run started with, whatever the timing rule says today
    if run_dir:
        from ..interrupt import begin, note_saved

        begin("run", run_dir)
        if s.state.epoch:
            note_saved(run_dir, f"epoch {s.state.epoch}")
    if s.state.epoch >= t.epochs:
        raise DaxiaoError(f"{run_dir} already finished {s.state.epoch} of {t.epochs} epochs; pass a larger --epochs.")
    if verbose:
        describe(model, bundle, s)
        own_defaults(cfg)
    history = History()
    own: list[Callback] = [history]
    if verbose:
        own.append(ProgressBar(t.epochs))
    if writer:
        own.append(writer)
    if t.patience:
        own.append(EarlyStopping("val_accuracy", t.patience, verbose=bool(verbose)))
    if distributed.is_distributed():
        own.append(RankSeed(t.seed, distributed.rank()))
    if t.lookahead:  # first after History: every later hook (the epoch's val, the run writer) sees averaged weights
        own.insert(1, Lookahead())
    state = run(s, t.epochs, CallbackList([*own, *(callbacks or [])]))
    history.summary = {"history": state.history, "best_val_acc": state.best_val_acc, "best_epoch": state.best_epoch,
                       "train_seconds": sum(r["epoch_seconds"] for r in state.history),
                       "run_dir": str(run_dir) if run_dir else None, "classes": bundle.classes,
                       "preprocess": s.preprocess}
    history.params = {"epochs": t.epochs, "steps": len(s.train_loader)}  # .model is the session's (Keras)
    return history


def _bundle(model: nn.Module, x, y, cfg: RunConfig, validation_split: float, validation_data) -> DataBundle:
    if isinstance(x, DataBundle):
        return x
    if isinstance(x, (str, Path)):
        if y is not None:
            raise DaxiaoError("fit(model, data) takes labels only with image arrays; a data set name or path "
                              "carries its own.")
        return load_for_model(model, str(x), cfg)
    if x is None:
        return load_for_model(model, cfg.data.data, cfg)
    if y is None:
        raise DaxiaoError("fit(model, x, y): images given without labels y.")
    return bundle_from_arrays(x, y, getattr(model, "num_classes", None), validation_split, validation_data)


def _as_module(loss) -> nn.Module | None:
    if loss is None or isinstance(loss, nn.Module):
        return loss

    class _Fn(nn.Module):  # a plain function (logits, targets) -> loss, as a module
        def forward(self, logits, targets):
            return loss(logits, targets)

    return _Fn()


def load_for_model(model: nn.Module, data: str, cfg: RunConfig) -> DataBundle:
    """Named data at the model's input size and channels (digits upscaled for a 28x28 model, say)."""
    mcfg = getattr(model, "pretrained_cfg", None) or {}
    c, s, _ = mcfg.get("input_size", (cfg.data.channels, cfg.data.image_size, None))
    return load_data(DataConfig(**{**vars(cfg.data), "data": data, "image_size": s, "channels": c}), cfg.train.seed,
                     cache_dir=cfg.train.cache_dir)


def own_defaults(cfg: RunConfig) -> None:
    """One line naming the model's own defaults this run took (`runs.apply_model_defaults`), after the
    header: by then the run folder is locked and the data read, so bad input still ends in one error line."""
    applied = vars(cfg).get("_model_defaults")
    if applied:
        console.print(f"{cfg.model.name}'s own defaults: " + ", ".join(f"{k} {v}" for k, v in applied.items())
                      + " (README's models table; a flag overrides any)", markup=False)


def describe(model: nn.Module, bundle: DataBundle, s: Session) -> None:
    pre, name = bundle.preprocess, getattr(model, "daxiao_name", type(model).__name__)
    val = f"{len(bundle.val)} val" if bundle.val is not None else "no val"
    start = s.state.epoch
    resuming = f", resuming at epoch {start + 1}" if start else ""
    console.print(f"[bold]{escape(name)}[/] on {escape(bundle.source)}: {len(bundle.train)} train / {val} images, "
                  f"{len(bundle.classes)} classes, {pre.channels}x{pre.image_size}x{pre.image_size}"
                  f"{f' ({escape(bundle.size_rule)})' if bundle.size_rule else ''}, "
                  f"{'fp16' if s.fp16 else 'bf16' if s.bf16 else 'fp32'} on {s.device}{_ranks(s)}{resuming}")
    counts = bundle.class_counts()
    if len(counts) <= 20:
        console.print("class counts (train): " + ", ".join(f"{k}={v}" for k, v in counts.items()), markup=False)
    if bundle.skipped:
        from ..data.folder import skipped_summary

        console.print(f"[yellow]{escape(skipped_summary(bundle.skipped))}[/]")


def _ranks(s: Session) -> str:
    if not distributed.is_distributed():
        return ""
    n = distributed.world_size()
    return (f" x {n} processes (global batch {s.train_loader.batch_size * n} = {s.train_loader.batch_size} per "
            f"process x {n}, {torch.get_num_threads()} thread(s) each)")
