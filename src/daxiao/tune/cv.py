"""One trial's score: k-fold cross-validation (or hold-out), every fold trained in step so a pruner can
judge the running mean across folds after each epoch.

The k folds are k `trainer.Session`s (the same setup `fit` uses) advanced one epoch at a time; after
each epoch the mean validation accuracy over folds is reported. Training folds in step rather than one
after another is what lets a bad trial stop after a few epochs of every fold instead of after whole folds.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch

from ..config import DataConfig, RunConfig
from ..data import DataBundle, FileSplit, Split, TensorSplit, load_data
from ..data.folder import FileList
from ..errors import DaxiaoError
from ..models import model_info
from ..models.head import TransferModel, freeze_base
from ..training.callbacks import CallbackList
from ..training.loop import run_epoch
from ..training.runs import data_config, make_model
from ..training.session import prepare


def cv_folds(labels: torch.Tensor | np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, shuffled k-fold (train_idx, val_idx) pairs fixed by `seed` (scikit-learn's splitter)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    smallest = min(Counter(y.tolist()).values())
    if k > smallest:
        raise DaxiaoError(f"--cv {k} needs at least {k} images of every class, but the smallest class has "
                          f"{smallest}; use --cv {max(2, smallest)} or fewer folds, or --cv 0 for a hold-out split.")
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def pooled(bundle: DataBundle) -> Split:
    """Train and validation splits as one: cross-validation makes its own validation folds."""
    a, b = bundle.train, bundle.val
    if isinstance(a, TensorSplit):
        return TensorSplit(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]))
    fa, fb = a.files, b.files
    return FileSplit(FileList(fa.paths + fb.paths, fa.labels + fb.labels, fa.classes, fa.grey and fb.grey))


class FoldCache:
    """Loaded data and its folds, per data setting: every trial of a study reuses them (data is read once
    per process, so memory stays flat however many trials run)."""

    def __init__(self, k: int):
        self.k = k
        self._cache: dict = {}

    def folds(self, cfg: RunConfig) -> list[DataBundle]:
        d = data_config(cfg, model_info(cfg.model.name).name)  # as `daxiao train` loads it (pretrained: RGB, size)
        key = (d.data, d.val, d.data_dir, d.image_size, d.channels, d.resize, d.val_split, cfg.train.seed)
        if key not in self._cache:
            self._cache[key] = self._make(d, cfg.train.seed)
        return self._cache[key]

    def _make(self, d: DataConfig, seed: int) -> list[DataBundle]:
        bundle = load_data(d, seed)
        if self.k == 0:  # hold-out: the data's own validation split
            return [bundle]
        pool = pooled(bundle)
        out = []
        for tr, va in cv_folds(pool.targets, self.k, seed):
            out.append(DataBundle(pool.take(tr), pool.take(va), None, bundle.classes, bundle.preprocess,
                                  bundle.source))
        return out


def _model(cfg: RunConfig, bundle: DataBundle) -> torch.nn.Module:
    """The trial's model; with --freeze-base only its head trains, as in `daxiao train`'s head stage."""
    model = make_model(cfg, bundle)
    if cfg.model.freeze_base and isinstance(model, TransferModel):
        freeze_base(model)
    return model


def cross_validate(cfg: RunConfig, folds: list[DataBundle],
                   report: Callable[[int, float], None] | None = None) -> dict:
    """Train one model per fold for `cfg.train.epochs`, in step. After each epoch `report(epoch, mean_acc)`
    is called (1-based epoch); it may raise to stop the trial (Optuna's TrialPruned), in which case the
    partial result is attached to the exception as ``.result``.

    Returns {"acc": final-epoch mean val accuracy, "std", "fold_acc", "curve" (mean per epoch),
    "epochs_run", "fold_epochs", "seconds"}. The final epoch is scored, not the best one, as scikit-learn's
    GridSearchCV scores the model it fit.
    """
    t0 = time.perf_counter()
    sessions = [prepare(_model(cfg, fb), fb, cfg) for fb in folds]
    loops = [CallbackList([], s) for s in sessions]  # the folds run the epochs `fit` runs, in step
    curve: list[float] = []
    accs: list[float] = []

    def result() -> dict:
        return {"acc": curve[-1] if curve else float("nan"), "std": float(np.std(accs)) if accs else float("nan"),
                "fold_acc": accs, "curve": curve, "epochs_run": len(curve),
                "fold_epochs": len(curve) * len(folds), "seconds": time.perf_counter() - t0}

    try:
        for epoch in range(cfg.train.epochs):
            accs = []
            for s, cbs in zip(sessions, loops, strict=True):
                accs.append(run_epoch(s, epoch, cbs)["val_accuracy"])
            curve.append(float(np.mean(accs)))
            if report is not None:
                report(epoch + 1, curve[-1])
    except Exception as e:
        e.result = result()
        raise
    finally:
        del sessions  # the models, optimizers and loaders of this trial: freed before the next one
        gc.collect()
    return result()
