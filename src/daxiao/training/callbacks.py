"""Callbacks: how features join the training loop without side channels (Keras' contract).

The loop (`daxiao.training.loop`) calls, in order:

    on_train_begin(logs)
      on_epoch_begin(epoch, logs)
        on_train_batch_begin(step, logs)           logs["batch"]: the `Batch` about to be trained on
        on_train_loss(batch, logits, loss) -> loss  may add to the loss (distillation's teacher term)
        on_train_batch_end(step, logs)             logs: "loss" (a detached tensor: no host sync), "size"
      on_epoch_end(epoch, logs)                    logs in Keras' names: loss, accuracy, val_loss, val_accuracy ...
    on_train_end(logs)

Data-parallel: every rank runs every callback except those with ``rank_zero_only = True`` (the run-folder
writer, the progress display), which only rank 0 runs; no collective may happen inside one of those.

`self.session` is the running `Session` (its `.model`, `.optimizer`, `.state` with the history so far);
setting ``self.session.stop_training = True`` ends training after the current batch, as
``self.model.stop_training`` does in Keras. Epochs are 0-based in hooks, 1-based in printed lines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch

from ..console import console, progress
from ..errors import DaxiaoError
from .distributed import is_rank_zero


class Callback:
    """Override any hook; the defaults do nothing."""

    session = None  # set by CallbackList before on_train_begin
    rank_zero_only = False  # data-parallel: True runs it on rank 0 alone (writing, printing)

    @property
    def model(self) -> torch.nn.Module:
        return self.session.model

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_train_batch_begin(self, step: int, logs: dict | None = None) -> None: ...
    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None: ...

    def on_train_loss(self, batch, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        return loss


class CallbackList(Callback):
    """Calls each callback's hook in order; `on_train_loss` threads the loss through all of them."""

    def __init__(self, callbacks: Iterable[Callback], session=None):
        callbacks = list(callbacks)
        for c in callbacks:
            if not isinstance(c, Callback):
                raise DaxiaoError(f"callbacks must be daxiao.Callback instances (received {type(c).__name__}); "
                                  "subclass daxiao.Callback or use daxiao.LambdaCallback.")
        zero = is_rank_zero()
        self.callbacks = [c for c in callbacks if zero or not c.rank_zero_only]
        if session is not None:
            self.set_session(session)

    def set_session(self, session) -> None:
        self.session = session
        for c in self.callbacks:
            c.session = session

    def on_train_begin(self, logs=None):
        for c in self.callbacks:
            c.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for c in self.callbacks:
            c.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        for c in self.callbacks:
            c.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for c in self.callbacks:
            c.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, step, logs=None):
        for c in self.callbacks:
            c.on_train_batch_begin(step, logs)

    def on_train_batch_end(self, step, logs=None):
        for c in self.callbacks:
            c.on_train_batch_end(step, logs)

    def on_train_loss(self, batch, logits, loss):
        for c in self.callbacks:
            loss = c.on_train_loss(batch, logits, loss)
        return loss


class LambdaCallback(Callback):
    """Keras' LambdaCallback: `LambdaCallback(on_epoch_end=lambda epoch, logs: print(logs["val_accuracy"]))`."""

    def __init__(self, **hooks: Callable):
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise DaxiaoError(f"LambdaCallback has no hook {name!r}.")
            setattr(self, name, fn)


class History(Callback):
    """Keras' History: `.history["val_accuracy"]` is the list of per-epoch values, `.epoch` the epochs run.

    `fit` returns it. It is also the run's summary as a mapping (``result["best_val_acc"]``,
    ``result["history"]`` = per-epoch rows as metrics.csv holds them, ``result["run_dir"]`` ...).
    """

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []
        self.summary: dict = {}

    def on_train_begin(self, logs=None):
        for row in self.session.state.history:  # a resumed run's earlier epochs
            self._add(row["epoch"] - 1, keras_logs(row))

    def on_epoch_end(self, epoch, logs=None):
        self._add(epoch, logs)

    def _add(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.history.setdefault(k, []).append(v)

    def __getitem__(self, key: str):
        return self.summary[key]

    def get(self, key: str, default=None):
        return self.summary.get(key, default)

    def keys(self):
        return self.summary.keys()

    def __iter__(self):
        return iter(self.summary)

    def __len__(self) -> int:
        return len(self.summary)


def keras_logs(row: dict) -> dict:
    """A metrics.csv row in the names Keras' callbacks and History use."""
    out = {"loss": row["train_loss"], "accuracy": row["train_acc"]}
    if row.get("val_acc") not in (None, ""):
        out.update(val_loss=row["val_loss"], val_accuracy=row["val_acc"])
        if row.get("val_top5") not in (None, ""):
            out["val_top5"] = row["val_top5"]
    out.update(learning_rate=row["lr"], images_per_s=row["images_per_s"], epoch_seconds=row["epoch_seconds"])
    return out


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs (Keras' EarlyStopping, mode inferred:
    "loss" in the name means lower is better). Counts from the run's history, so a resumed run stops
    exactly where an uninterrupted one would. The loop restores the best val-accuracy weights at the end."""

    def __init__(self, monitor: str = "val_accuracy", patience: int = 0, min_delta: float = 0.0,
                 verbose: bool = True):
        self.monitor, self.patience, self.min_delta, self.verbose = monitor, patience, min_delta, verbose
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        values = [keras_logs(r).get(self.monitor) for r in self.session.state.history]
        if not values or values[-1] is None:
            raise DaxiaoError(f"EarlyStopping monitors {self.monitor!r}, which this run does not log "
                              f"(it logs {', '.join(logs or {})}).")
        sign = -1 if "loss" in self.monitor else 1
        best_at, best = 0, -math.inf
        for i, v in enumerate(values):
            if sign * v > best + self.min_delta:
                best_at, best = i, sign * v
        if len(values) - 1 - best_at >= self.patience > 0:
            self.stopped_epoch = epoch
            self.session.stop_training = True
            if self.verbose:
                console.print(f"early stop: {self.monitor} not better for {self.patience} epochs "
                              f"(best {sign * best:.4f} at epoch {best_at + 1})")


class ProgressBar(Callback):
    """A bar while an epoch trains (loss, images/s every 10 steps) and one line per epoch. Off a terminal
    the bar becomes a plain line at a fixed interval (`daxiao.console.progress`), so a log shows progress."""

    rank_zero_only = True

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.phase = None

    def on_epoch_begin(self, epoch, logs=None):
        n = len(self.session.train_loader)
        self.phase = progress(f"epoch {epoch + 1}/{self.epochs}", n, "batches").start()
        self.seen, self.t0 = 0, time.perf_counter()

    def on_train_batch_end(self, step, logs=None):
        self.seen += logs["size"]
        if step % 10 == 0:  # one host sync every 10 steps, not every step
            rate = self.seen / (time.perf_counter() - self.t0)
            self.phase.update(step + 1, f"loss {logs['loss'].item():.4f} {rate:,.0f} img/s")

    def on_epoch_end(self, epoch, logs=None):
        self._close()
        val = (f"val loss {logs['val_loss']:.4f} acc {logs['val_accuracy']:.4f}" if "val_accuracy" in logs
               else "no validation")
        console.print(f"epoch {epoch + 1:>3}/{self.epochs}  train loss {logs['loss']:.4f} acc {logs['accuracy']:.4f}  "
                      f"{val}{' *' if logs.get('improved') else '  '}  {logs['images_per_s']:,.0f} img/s  "
                      f"{logs['epoch_seconds']:.1f}s")

    def on_train_end(self, logs=None):
        self._close()

    def _close(self) -> None:
        if self.phase is not None:
            self.phase.enabled = False  # the epoch line that follows says it all: no "done in" line as well
            self.phase.close()
            self.phase = None


class RankSeed(Callback):
    """Data-parallel: each rank's own torch random stream (dropout, stochastic depth), reseeded from (seed,
    epoch, rank) at every epoch, so ranks differ from each other and a resumed run continues exactly."""

    def __init__(self, seed: int, rank: int):
        self.seed, self.rank = seed, rank

    def on_epoch_begin(self, epoch, logs=None):
        torch.manual_seed((self.seed * 100_003 + epoch) * 1_000_003 + self.rank)


__all__ = ["Callback", "CallbackList", "EarlyStopping", "History", "LambdaCallback", "ProgressBar", "RankSeed",
           "keras_logs"]
