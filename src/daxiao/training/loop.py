"""One readable training loop: `train_one_epoch`, `evaluate`, and `run` that ties epochs to callbacks.

    on_train_begin
    for each epoch:  train (one pass, lr stepped per batch) -> evaluate on val -> on_epoch_end
    restore the best epoch's weights -> on_train_end

Everything else joins through callbacks (`daxiao.training.callbacks`): the progress display, the run-folder
writer, early stopping, distillation's teacher term, lr-find's recorder, and the user's own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import Batch
from ..errors import DaxiaoError
from .callbacks import Callback, CallbackList, keras_logs
from .distributed import all_reduce_sum
from .losses import build_criterion
from .precision import autocast


def forward(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Logits for a batch: images go through the whole model, cached features through its head alone."""
    return model.classify(batch.inputs) if batch.kind == "features" else model(batch.inputs)


class NonFiniteLoss(DaxiaoError):
    """The training loss became NaN or inf: training stops, the run folder keeps the last good epoch."""


def tta_forward(model: nn.Module, batch: Batch, tta: str = "none") -> torch.Tensor:
    """Logits averaged over test-time views (airbench's `infer`): "flip" averages the image and its mirror;
    "flip-shift" also averages the mirrored pair shifted one pixel up-left and down-right (reflect padding),
    weighted half and half with the unshifted pair. Features (no pixels) and "none" are one plain pass."""
    if tta == "none" or batch.kind == "features":
        return forward(model, batch).float()
    x = batch.inputs

    def mirror(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model(v).float() + model(v.flip(-1)).float())

    logits = mirror(x)
    if tta == "flip-shift":
        h, w = x.shape[-2:]
        pad = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [pad[..., :h, :w].contiguous(memory_format=torch.channels_last),
                   pad[..., 2:, 2:].contiguous(memory_format=torch.channels_last)]
        logits = 0.5 * logits + 0.25 * (mirror(shifted[0]) + mirror(shifted[1]))
    return logits


# ---- one epoch -----------------------------------------------------------------------------------------
def train_one_epoch(session, callbacks: Callback | None = None, epoch: int = 0, check_finite: bool = True) -> dict:
    """One pass over the session's train loader; returns {"loss", "acc", "images_per_s", "seconds"}.
    Raises `NonFiniteLoss` (naming the epoch and first bad step) if any step's loss was NaN or inf, unless
    `check_finite` is off (the lr range test drives the loss to divergence on purpose)."""
    s, cbs = session, callbacks or CallbackList([])
    s.model.train()
    loss_sum = torch.zeros((), device=s.device)
    correct = torch.zeros((), device=s.device, dtype=torch.long)
    # Non-finite loss is checked on every step but read once, at the epoch's own .item() below: the first bad
    # step is kept on the device (no host sync per step), and the epoch's weights are never saved if it is set.
    first_bad = torch.full((), -1, device=s.device, dtype=torch.long)
    seen, t0 = 0, time.perf_counter()
    net, fp16, scaler = s.net, getattr(s, "fp16", False), getattr(s, "scaler", None)  # net: DDP/compiled, if so
    for step, batch in enumerate(s.train_loader):
        batch = batch.to(s.device, non_blocking=True)
        cbs.on_train_batch_begin(step, {"batch": batch})
        with autocast(s.device, s.bf16, fp16):
            logits = forward(net, batch)
            loss = s.criterion(logits.float(), batch.targets)
            loss = cbs.on_train_loss(batch, logits, loss)
        s.optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            s.optimizer.step()
        else:  # fp16: scaled backward; the step is skipped (and the scale lowered) when gradients overflowed
            scaler.scale(loss).backward()
            scaler.step(s.optimizer)
            scaler.update()
        s.scheduler.step()  # per step, not per epoch: warmup and one-cycle need the resolution
        n = len(batch)
        bad = ~torch.isfinite(loss.detach())
        first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
        loss_sum += loss.detach() * n  # summed on the tensor: no host sync per step
        hard = batch.targets.argmax(1) if batch.targets.ndim == 2 else batch.targets  # Mixup/CutMix: soft targets
        correct += (logits.argmax(1) == hard).sum()
        seen += n
        cbs.on_train_batch_end(step, {"loss": loss.detach(), "size": n, "batch": batch})
        if s.stop_training:
            break
    dt = time.perf_counter() - t0
    loss_sum, correct, seen = all_reduce_sum(loss_sum, correct, seen)  # over all ranks (data-parallel)
    step_bad = int(first_bad.item()) if check_finite else -1
    if check_finite and (step_bad >= 0 or not math.isfinite(loss_sum)):  # NaN on any rank: every rank stops
        lr = s.optimizer.param_groups[0]["lr"]
        where = f"step {step_bad + 1} of {len(s.train_loader)}" if step_bad >= 0 else "a step of another process"
        raise NonFiniteLoss(f"the training loss became NaN or inf at epoch {epoch + 1}, {where} "
                            f"(lr {lr:.3g}); training stopped and nothing of this epoch was "
                            f"saved. Try a lower learning rate (e.g. --lr {lr / 10:.3g}), or --precision fp32.")
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1),
            "images_per_s": seen / dt, "seconds": dt}


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion: nn.Module | None = None, bf16: bool = False,
             device: torch.device | None = None, collect: bool = False, fp16: bool = False,
             tta: str = "none") -> dict:
    """Loss, accuracy and top-5 (with >= 5 classes) over `loader`; `collect` adds labels, probabilities and
    the sample index of each row (files that failed to decode are missing from all three). A loader
    sharded over ranks gives sums over all of them (every rank must call this then). `tta`: test-time
    views to average (`tta_forward`)."""
    device = device or next(model.parameters()).device
    criterion = criterion or build_criterion()
    model.eval()
    loss_sum, correct, top5, seen, num_classes = 0.0, 0, 0, 0, 0
    all_labels, all_probs, all_index = [], [], []
    for batch in loader:
        batch = batch.to(device)
        labels = batch.targets
        with autocast(device, bf16, fp16):
            logits = tta_forward(model, batch, tta)
        loss_sum += criterion(logits, labels).item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        num_classes = logits.shape[1]
        if num_classes >= 5:
            top5 += (logits.topk(5, 1).indices == labels[:, None]).any(1).sum().item()
        seen += len(labels)
        if collect:
            all_labels.append(labels.cpu())
            all_probs.append(logits.softmax(1).cpu())
            all_index.append(batch.index.cpu())
    shard = getattr(loader, "shard", None)
    if shard is not None and shard[1] > 1 and not collect:
        loss_sum, correct, top5, seen = all_reduce_sum(loss_sum, correct, top5, seen)
    out = {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1)}
    if num_classes >= 5:
        out["top5"] = top5 / seen
    if collect:
        out["labels"] = torch.cat(all_labels) if all_labels else torch.empty(0, dtype=torch.long)
        out["probs"] = torch.cat(all_probs) if all_probs else torch.empty(0)
        out["index"] = torch.cat(all_index) if all_index else torch.empty(0, dtype=torch.long)
    return out


# ---- epochs ----------------------------------------------------------------------------------------------
@dataclass
class LoopState:
    """What the epoch loop carries from one epoch to the next (and what resuming restores)."""

    epoch: int = 0                  # the next epoch to run, 0-based
    history: list[dict] = field(default_factory=list)  # one row per epoch, as metrics.csv holds them
    best_val_acc: float = -1.0
    best_epoch: int = -1
    best_state: dict | None = None  # in memory only: the best epoch's weights

    def update(self, epoch: int, tr: dict, va: dict | None, lr: float, model: nn.Module) -> bool:
        """Record an epoch; True when its val accuracy is the best so far (without val: every epoch)."""
        self.epoch = epoch + 1
        self.history.append({"epoch": epoch + 1, "train_loss": tr["loss"], "train_acc": tr["acc"],
                             "val_loss": va["loss"] if va else "", "val_acc": va["acc"] if va else "",
                             "val_top5": va.get("top5", "") if va else "", "lr": lr,
                             "images_per_s": tr["images_per_s"], "epoch_seconds": tr["seconds"]})
        if va is None:  # nothing to choose by: the last epoch is the model (Keras' fit without validation)
            self.best_epoch, self.best_state = epoch + 1, None
            return True
        if va["acc"] <= self.best_val_acc:
            return False
        self.best_val_acc, self.best_epoch = va["acc"], epoch + 1
        self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def to_json(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "best_state"}


def run_epoch(session, epoch: int, callbacks: CallbackList) -> dict:
    """One epoch: train, evaluate on val, record; returns the epoch's logs (Keras' names)."""
    s = session
    callbacks.on_epoch_begin(epoch, {})
    s.train_loader.set_epoch(epoch)  # the shuffle order depends on (seed, epoch) only: resumable
    tr = train_one_epoch(s, callbacks, epoch)
    va = s.evaluate() if s.val_loader is not None else None
    improved = s.state.update(epoch, tr, va, s.optimizer.param_groups[0]["lr"], s.model)
    logs = {**keras_logs(s.state.history[-1]), "improved": improved}
    callbacks.on_epoch_end(epoch, logs)
    return logs


def run(session, epochs: int, callbacks: CallbackList) -> LoopState:
    """Train `session` from `session.state.epoch` to `epochs`, calling `callbacks` at every step of the way.
    The model ends holding the best epoch's weights (by val accuracy)."""
    s, state = session, session.state
    callbacks.set_session(s)
    callbacks.on_train_begin({"epochs": epochs, "initial_epoch": state.epoch})
    for epoch in range(state.epoch, epochs):
        run_epoch(s, epoch, callbacks)
        if s.stop_training:
            break
    if state.best_state is not None:
        s.model.load_state_dict(state.best_state)
    callbacks.on_train_end({"best_epoch": state.best_epoch, "best_val_accuracy": state.best_val_acc})
    return state
