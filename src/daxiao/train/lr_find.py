"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks"):
train briefly while the learning rate grows exponentially, plot loss against learning rate, and
suggest the rate where the loss falls fastest. A copy of the model is used; nothing is kept.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import RunConfig
from .data import DataBundle, make_loader
from .losses import build_criterion
from .trainer import build_optimizer, match_model_to_data, resolve_device


def lr_find(model: nn.Module, bundle: DataBundle, cfg: RunConfig, start_lr: float = 1e-7, end_lr: float = 10.0,
            steps: int = 100, out: str | Path | None = None) -> dict:
    """Run the range test with cfg's optimizer, batch size and loss.

    Returns:
        {"suggested_lr", "lrs", "losses"} (losses smoothed); writes the plot to `out` when given.
    """
    device = resolve_device()
    bundle = match_model_to_data(model, bundle)  # pretrained weights: their own normalization, as in fit
    model = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(model, cfg.optim)
    criterion = build_criterion(cfg.train.loss)
    loader = make_loader(bundle.train, cfg.train.batch_size, bundle.preprocess, shuffle=True, seed=cfg.train.seed,
                         workers=cfg.data.workers)
    lrs, losses, avg, best = [], [], 0.0, math.inf
    batches = _forever(loader)
    for i in range(steps):
        lr = start_lr * (end_lr / start_lr) ** (i / max(steps - 1, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = next(batches)
        loss = criterion(model(images.to(device).contiguous(memory_format=torch.channels_last)), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        avg = 0.98 * avg + 0.02 * loss.item()  # exponential smoothing, bias-corrected below
        smoothed = avg / (1 - 0.98 ** (i + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or (i > 10 and smoothed > 4 * best):  # diverged: the rest is noise
            break
    suggested = suggest_lr(lrs, losses)
    if out is not None:
        _plot(lrs, losses, suggested, Path(out))
    return {"suggested_lr": suggested, "lrs": lrs, "losses": losses}


def suggest_lr(lrs: list[float], losses: list[float]) -> float:
    """The rate of steepest descent of loss against log(lr), searched before the loss minimum."""
    loss = np.asarray(losses, dtype=float)
    stop = int(np.nanargmin(loss)) + 1
    skip = min(len(loss) // 10, max(stop - 2, 0))  # the first steps are dominated by the smoothing warm-up
    if stop - skip < 3:
        return lrs[max(stop - 1, 0)] / 10
    grad = np.gradient(loss[skip:stop], np.log10(lrs[skip:stop]))
    return float(lrs[skip + int(np.argmin(grad))])


def _forever(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _plot(lrs: list[float], losses: list[float], suggested: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggested, color="tab:red", linestyle="--", label=f"suggested lr {suggested:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="learning-rate range test")
    ax.set_ylim(top=min(max(losses[: max(len(losses) // 10, 1)]) * 1.5, max(losses)))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
