"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"):
train briefly while the learning rate grows exponentially, plot loss against learning rate, and
suggest the rate where the loss falls fastest. A copy of the model is used; nothing is kept.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import RunConfig
from ..data import DataBundle
from ..plots import new_figure
from .callbacks import Callback, CallbackList
from .loop import train_one_epoch
from .session import prepare


class _RangeTest(Callback):
    """Records the smoothed loss at each step and stops once it has diverged."""

    def __init__(self, steps: int):
        self.steps, self.lrs, self.losses, self.avg, self.best = steps, [], [], 0.0, math.inf

    def on_train_batch_begin(self, step, logs=None):
        self.lrs.append(self.session.optimizer.param_groups[0]["lr"])  # the rate this step trains at

    def on_train_batch_end(self, step, logs=None):
        i = len(self.losses)
        self.avg = 0.98 * self.avg + 0.02 * logs["loss"].item()  # exponential smoothing, bias-corrected below
        smoothed = self.avg / (1 - 0.98 ** (i + 1))
        self.losses.append(smoothed)
        self.best = min(self.best, smoothed)
        diverged = not math.isfinite(smoothed) or (i > 10 and smoothed > 4 * self.best)  # the rest is noise
        if diverged or len(self.losses) >= self.steps:
            self.session.stop_training = True


def lr_find(model: nn.Module, bundle: DataBundle, cfg: RunConfig, start_lr: float = 1e-7, end_lr: float = 10.0,
            steps: int = 100, out: str | Path | None = None) -> dict:
    """Run the range test with cfg's optimizer, batch size and loss, on the training loop itself: the
    learning rate grows exponentially per step (a LambdaLR in place of the schedule) for `steps` steps
    or until the loss diverges, over as many epochs as that takes.

    Returns:
        {"suggested_lr", "lrs", "losses"} (losses smoothed); writes the plot to `out` when given.
    """
    model = copy.deepcopy(model)  # the test wrecks the weights on purpose; the caller's model is untouched
    cfg = copy.deepcopy(cfg)
    cfg.train.precision = "fp32"
    s = prepare(model, replace(bundle, val=None), cfg)
    for group in s.optimizer.param_groups:
        group["lr"] = group["initial_lr"] = start_lr
    growth = (end_lr / start_lr) ** (1 / max(steps - 1, 1))
    s.scheduler = torch.optim.lr_scheduler.LambdaLR(s.optimizer, lambda i: growth ** i)
    recorder = _RangeTest(steps)
    cbs = CallbackList([recorder], s)
    epoch = 0
    while not s.stop_training:
        s.train_loader.set_epoch(epoch)
        train_one_epoch(s, cbs, check_finite=False)
        epoch += 1
    suggested = suggest_lr(recorder.lrs, recorder.losses)
    if out is not None:
        _plot(recorder.lrs, recorder.losses, suggested, Path(out))
    return {"suggested_lr": suggested, "lrs": recorder.lrs, "losses": recorder.losses}


def suggest_lr(lrs: list[float], losses: list[float]) -> float:
    """The rate of steepest descent of loss against log(lr), searched before the loss minimum."""
    loss = np.asarray(losses, dtype=float)
    stop = int(np.nanargmin(loss)) + 1
    skip = min(len(loss) // 10, max(stop - 2, 0))  # the first steps are dominated by the smoothing warm-up
    if stop - skip < 3:
        return lrs[max(stop - 1, 0)] / 10
    grad = np.gradient(loss[skip:stop], np.log10(lrs[skip:stop]))
    return float(lrs[skip + int(np.argmin(grad))])


def _plot(lrs: list[float], losses: list[float], suggested: float, path: Path) -> None:
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    ax.plot(lrs, losses)
    ax.axvline(suggested, color="tab:red", linestyle="--", label=f"suggested lr {suggested:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="learning-rate range test")
    ax.set_ylim(top=min(max(losses[: max(len(losses) // 10, 1)]) * 1.5, max(losses)))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
