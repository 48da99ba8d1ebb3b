"""One readable training loop: `train_one_epoch`, `evaluate`, and `fit` that ties them to a run folder.

    for each epoch:  train (one pass, lr stepped per batch) -> evaluate on val -> log -> checkpoint

`tune`, `compare` and `distill` call `fit`; nothing else owns a loop.
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file
from torch import nn

from .augment import build_augment
from .checkpoint import load_train_state, model_meta, save_train_state, save_weights
from .config import DataConfig, RunConfig, apply_overrides, save_yaml
from .data import DataBundle, Preprocess, load_data, make_loader
from .errors import DaxiaoError
from .losses import build_criterion, class_weights

console = Console(stderr=True, soft_wrap=True)  # one line per epoch, also in CI logs
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3, "sgd": 1e-2}  # Keras' defaults


# ---- optimizer, schedule, precision ------------------------------------------------------------------
def build_optimizer(model: nn.Module, o) -> torch.optim.Optimizer:
    """Optimizer by Keras name; weight decay only on weights that multiply (not norms or biases). A
    TransferModel's pretrained backbone learns at lr x backbone_lr_scale (discriminative rates)."""
    lr = o.lr or DEFAULT_LR[o.optimizer]
    params = [p for p in model.parameters() if p.requires_grad]
    base = {id(p) for p in model.backbone_parameters()} if hasattr(model, "backbone_parameters") else set()
    parts = [(lr, [p for p in params if id(p) not in base]),
             (lr * o.backbone_lr_scale, [p for p in params if id(p) in base])]
    groups = [g for part_lr, ps in parts if ps
              for g in ({"params": [p for p in ps if p.ndim > 1], "weight_decay": o.weight_decay, "lr": part_lr},
                        {"params": [p for p in ps if p.ndim <= 1], "weight_decay": 0.0, "lr": part_lr})]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)  # one kernel, not a loop over tensors:
    if o.optimizer == "adam":                                      # 1.36 -> 0.51 ms per seed-cnn step on CPU
        return torch.optim.Adam(groups, lr=lr, fused=fused)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, fused=fused)
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
    return torch.optim.RMSprop(groups, lr=lr, momentum=o.momentum)


def build_scheduler(optimizer: torch.optim.Optimizer, o, steps_per_epoch: int, epochs: int):
    """A per-step schedule from torch: the lr is a pure function of the step, so resuming is exact."""
    S = torch.optim.lr_scheduler
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, round(o.warmup_epochs * steps_per_epoch))
    if o.schedule == "onecycle":  # its own warmup: 25 % of the steps unless warmup_epochs says otherwise
        pct = warmup / total if warmup else 0.25
        peaks = [g["lr"] for g in optimizer.param_groups]  # per group: a backbone's lower rate stays lower
        return S.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=pct,
                            cycle_momentum=o.optimizer in ("sgd", "rmsprop"))
    if o.schedule == "cosine":
        main = S.CosineAnnealingLR(optimizer, T_max=total - warmup)
    elif o.schedule == "step":  # decays by gamma every step_size epochs (counted in steps)
        every = max(1, round((o.step_size or max(epochs / 3, 1)) * steps_per_epoch))
        main = S.StepLR(optimizer, step_size=every, gamma=o.gamma)
    else:
        main = S.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if not warmup:
        return main
    return S.SequentialLR(optimizer, [S.LinearLR(optimizer, 0.1, 1.0, warmup), main], [warmup])


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_bf16(precision: str, model: nn.Module, loader, criterion: nn.Module, device: torch.device) -> bool:
    """fp32 or bf16 autocast. "auto" times both on a real batch and keeps bf16 only if it is >= 15 % faster:
    on this project's CPUs bf16 makes seed-cnn and ResNet about 1.5-2x faster but MobileNet's depthwise
    convolutions about 2x slower, so no fixed rule is right (benchmarks/seed_cnn.py)."""
    if precision != "auto":
        return precision == "bf16"
    if not bf16_supported(device):
        return False
    images, labels = next(iter(loader))
    images, labels = to_input(images, device), labels.to(device)
    probe = copy.deepcopy(model).train()  # timing must not touch the real weights, BN statistics or RNG

    def step_seconds(bf16: bool, repeats: int = 3) -> float:
        times = []
        for _ in range(repeats + 1):  # the first call builds oneDNN kernels: not timed
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = criterion(probe(images).float(), labels)
            loss.backward()
            probe.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        return sorted(times[1:])[len(times[1:]) // 2]

    with torch.random.fork_rng(devices=[]):
        fp32, bf16 = step_seconds(False), step_seconds(True)
    return bf16 < 0.85 * fp32


def resolve_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_input(x: torch.Tensor, device: torch.device, non_blocking: bool = False) -> torch.Tensor:
    """Image batches go channels_last (measured ~2x faster convs on CPU); cached features (B, F) as they are."""
    x = x.to(device, non_blocking=non_blocking)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


# ---- one epoch -----------------------------------------------------------------------------------------
def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, bf16: bool = False, device: torch.device | None = None,
                    progress: Progress | None = None, task=None) -> dict:
    """One pass over `loader`; returns {"loss", "acc", "images_per_s"} averaged over images."""
    device = device or next(model.parameters()).device
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, t0 = 0, time.perf_counter()
    for step, (images, labels) in enumerate(loader):
        images = to_input(images, device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
            loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()  # per step, not per epoch: warmup and one-cycle need the resolution
        n = len(labels)
        loss_sum += loss.detach() * n  # summed on the tensor: no host sync per step
        hard = labels.argmax(1) if labels.ndim == 2 else labels  # Mixup/CutMix give soft targets
        correct += (logits.argmax(1) == hard).sum()
        seen += n
        if progress is not None and (step % 10 == 0 or step == len(loader) - 1):
            rate = seen / (time.perf_counter() - t0)
            progress.update(task, completed=step + 1,
                            info=f"loss {loss_sum.item() / seen:.4f} acc {correct.item() / seen:.4f} {rate:,.0f} img/s")
    dt = time.perf_counter() - t0
    return {"loss": loss_sum.item() / max(seen, 1), "acc": correct.item() / max(seen, 1),
            "images_per_s": seen / dt, "seconds": dt}


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion: nn.Module | None = None, bf16: bool = False,
             device: torch.device | None = None, collect: bool = False) -> dict:
    """Loss, accuracy and top-5 (with >= 5 classes) over `loader`; `collect` adds labels and probabilities."""
    device = device or next(model.parameters()).device
    criterion = criterion or build_criterion()
    model.eval()
    loss_sum, correct, top5, seen, num_classes = 0.0, 0, 0, 0, 0
    all_labels, all_probs = [], []
    for images, labels in loader:
        images, labels = to_input(images, device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images).float()
        loss_sum += criterion(logits, labels).item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        num_classes = logits.shape[1]
        if num_classes >= 5:
            top5 += (logits.topk(5, 1).indices == labels[:, None]).any(1).sum().item()
        seen += len(labels)
        if collect:
            all_labels.append(labels.cpu())
            all_probs.append(logits.softmax(1).cpu())
    out = {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1)}
    if num_classes >= 5:
        out["top5"] = top5 / seen
    if collect:
        out["labels"] = torch.cat(all_labels) if all_labels else torch.empty(0, dtype=torch.long)
        out["probs"] = torch.cat(all_probs) if all_probs else torch.empty(0)
    return out


# ---- fit ---------------------------------------------------------------------------------------------
@dataclass
class LoopState:
    """What the epoch loop carries from one epoch to the next (and what resuming restores)."""

    epoch: int = 0                  # the next epoch to run, 0-based
    history: list[dict] = field(default_factory=list)
    best_val_acc: float = -1.0
    best_epoch: int = -1
    stale: int = 0                  # epochs since val accuracy last improved
    best_state: dict | None = None  # in memory only: the best epoch's weights

    def update(self, epoch: int, tr: dict, va: dict, lr: float, model: nn.Module) -> bool:
        self.epoch = epoch + 1
        self.history.append({"epoch": epoch + 1, "train_loss": tr["loss"], "train_acc": tr["acc"],
                             "val_loss": va["loss"], "val_acc": va["acc"], "val_top5": va.get("top5", ""), "lr": lr,
                             "images_per_s": tr["images_per_s"], "epoch_seconds": tr["seconds"]})
        if va["acc"] <= self.best_val_acc:
            self.stale += 1
            return False
        self.best_val_acc, self.best_epoch, self.stale = va["acc"], epoch + 1, 0
        self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def to_json(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "best_state"}


def fit(model: nn.Module, data: str | DataBundle, cfg: RunConfig | None = None, run_dir: str | Path | None = None,
        verbose: bool = True, adapt: Callable[[Session], Session] | None = None, **overrides) -> dict:
    """Train `model` on `data` with the settings in `cfg` and/or keyword overrides (Keras-style names).

    Args:
        model: from `create_model`, with ``num_classes`` matching the data.
        data: a built-in name, folder or CSV path, or a `DataBundle`. Named data is loaded at the
            model's input size and channels.
        cfg: a full `RunConfig`; keyword overrides (``epochs=5, optimizer="adam"``) are applied on top.
        run_dir: folder for config.yaml, metrics.csv, best/last weights and the confusion matrix;
            None keeps everything in memory. With ``cfg.resume`` training continues from its last epoch.
        verbose: progress bar and one line per epoch on stderr.
        adapt: changes the prepared `Session` before the first epoch; distillation swaps in its loss and
            a train loader that hands that loss the teacher's logits (`daxiao.distill`).

    Returns:
        {"history": [per-epoch dicts], "best_val_acc", "best_epoch", "train_seconds", "run_dir", "classes",
        "preprocess"}. `model` holds the best epoch's weights afterwards.

    Example:
        >>> model = create_model("seed-cnn", num_classes=10, in_chans=1, input_size=8)
        >>> fit(model, "digits", epochs=5, optimizer="adam")["best_val_acc"] > 0.9
    """
    cfg = apply_overrides(copy.deepcopy(cfg) if cfg else RunConfig(), overrides).validate()
    t = cfg.train
    bundle = data if isinstance(data, DataBundle) else _load_for_model(model, str(data), cfg)
    s = prepare(model, bundle, cfg)
    s = adapt(s) if adapt else s
    pre = s.preprocess
    writer = RunWriter(run_dir, cfg, model_meta(model, bundle.classes, pre)) if run_dir else None
    loop = LoopState(**writer.restore(model, s.optimizer, s.scheduler)) if writer and cfg.resume else LoopState()
    if loop.epoch >= t.epochs:
        raise DaxiaoError(f"{run_dir} already finished {loop.epoch} of {t.epochs} epochs; pass a larger --epochs.")
    if verbose:
        _describe(model, bundle, s.bf16, s.device, loop.epoch)

    progress = _progress() if verbose else None
    with progress or nullcontext():
        for epoch in range(loop.epoch, t.epochs):
            task = None
            if verbose:
                task = progress.add_task(f"epoch {epoch + 1}/{t.epochs}", total=len(s.train_loader), info="")
            tr = s.train_epoch(epoch, progress, task)
            va = s.evaluate()
            improved = loop.update(epoch, tr, va, s.optimizer.param_groups[0]["lr"], model)
            if verbose:
                progress.remove_task(task)
                console.print(f"epoch {epoch + 1:>3}/{t.epochs}  train loss {tr['loss']:.4f} acc {tr['acc']:.4f}  "
                              f"val loss {va['loss']:.4f} acc {va['acc']:.4f}{' *' if improved else '  '}  "
                              f"{tr['images_per_s']:,.0f} img/s  {tr['seconds']:.1f}s")
            if writer:
                writer.end_epoch(model, s.optimizer, s.scheduler, loop, va["acc"], improved)
            if t.patience and loop.stale >= t.patience:
                if verbose:
                    console.print(f"early stop: val accuracy not better for {t.patience} epochs "
                                  f"(best {loop.best_val_acc:.4f} at epoch {loop.best_epoch})")
                break
    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
    if writer:
        va = s.evaluate(collect=True)
        writer.confusion_matrix(va, bundle.classes, loop.best_epoch)
    return {"history": loop.history, "best_val_acc": loop.best_val_acc, "best_epoch": loop.best_epoch,
            "train_seconds": sum(r["epoch_seconds"] for r in loop.history),
            "run_dir": str(run_dir) if run_dir else None, "classes": bundle.classes, "preprocess": pre}


@dataclass
class Session:
    """A model ready to train: loaders, loss, optimizer, schedule and precision, built from one config.
    `fit` runs one session; tune's cross-validation runs one per fold, in step."""

    model: nn.Module
    train_loader: object
    val_loader: object | None
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    bf16: bool
    device: torch.device
    preprocess: Preprocess  # what the loaders apply: saved with the weights

    def train_epoch(self, epoch: int, progress: Progress | None = None, task=None) -> dict:
        self.train_loader.set_epoch(epoch)  # the shuffle order depends on (seed, epoch) only: resumable
        return train_one_epoch(self.model, self.train_loader, self.criterion, self.optimizer, self.scheduler,
                               self.bf16, self.device, progress, task)

    def evaluate(self, collect: bool = False) -> dict:
        return evaluate(self.model, self.val_loader, self.criterion, self.bf16, self.device, collect)


def prepare(model: nn.Module, bundle: DataBundle, cfg: RunConfig, with_val: bool = True) -> Session:
    """Everything `fit` sets up before its first epoch, from a validated config. `with_val=False`
    builds no validation loader (the scikit-learn estimator trains on all it is given, as Keras does)."""
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    bundle = match_model_to_data(model, bundle)
    device, pre = resolve_device(), bundle.preprocess
    model.to(device).to(memory_format=torch.channels_last)  # measured ~2x faster convs on CPU (oneDNN)
    augment = build_augment(cfg.data.augment, len(bundle.classes))  # on uint8 batches, before normalization
    train_loader = make_loader(bundle.train, t.batch_size, pre, shuffle=True, seed=t.seed, workers=cfg.data.workers,
                               balanced=cfg.data.balanced_sampling, augment=augment)
    val_loader = None
    if with_val:  # never augmented
        val_loader = make_loader(bundle.val, max(256, 2 * t.batch_size), pre, workers=cfg.data.workers)
    counts = list(bundle.class_counts().values())
    criterion = build_criterion(t.loss, class_weights(t.class_weight, counts)).to(device)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, len(train_loader), t.epochs)
    bf16 = use_bf16(t.precision, model, train_loader, criterion, device)
    return Session(model, train_loader, val_loader, criterion, optimizer, scheduler, bf16, device, pre)


class RunWriter:
    """Everything fit writes into a run folder: config.yaml, metrics.csv, last/best weights, resumable state."""

    def __init__(self, run_dir: str | Path, cfg: RunConfig, meta: dict):
        self.run, self.cfg, self.meta = Path(run_dir), cfg, meta
        self.run.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, self.run / "config.yaml")

    def restore(self, model: nn.Module, optimizer, scheduler) -> dict:
        """Weights, optimizer, schedule, RNG and loop state exactly as they were after the last epoch."""
        state = load_train_state(self.run / "last.state.safetensors", optimizer, scheduler)
        model.load_state_dict(load_file(str(self.run / "last.safetensors")))
        loop = {k: state[k] for k in ("epoch", "history", "best_val_acc", "best_epoch", "stale")}
        return {**loop, "best_state": load_file(str(self.run / "best.safetensors"))}

    def end_epoch(self, model: nn.Module, optimizer, scheduler, loop: LoopState, val_acc: float,
                  improved: bool) -> None:
        with open(self.run / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, METRIC_FIELDS)
            w.writeheader()
            w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in loop.history)
        meta = {**self.meta, "epoch": loop.epoch, "val_acc": val_acc, "config": self.cfg.to_dict()}
        save_weights(model, self.run / "last.safetensors", meta)
        if improved:
            save_weights(model, self.run / "best.safetensors", meta)
        save_train_state(self.run / "last.state.safetensors", optimizer, scheduler, loop.to_json())

    def confusion_matrix(self, va: dict, classes: list[str], best_epoch: int) -> None:
        from .report import save_confusion_matrix  # matplotlib only when a run folder is written

        save_confusion_matrix(va["labels"], va["probs"].argmax(1), classes, self.run / "confusion_matrix.png",
                              title=f"{self.meta['model']} - val acc {va['acc']:.4f} (best epoch {best_epoch})")


METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "images_per_s",
                 "epoch_seconds"]


def _load_for_model(model: nn.Module, data: str, cfg: RunConfig) -> DataBundle:
    """Named data at the model's input size and channels (digits upscaled for a 28x28 model, say)."""
    c, s, _ = model.pretrained_cfg["input_size"]
    return load_data(DataConfig(**{**vars(cfg.data), "data": data, "image_size": s, "channels": c}), cfg.train.seed)


def match_model_to_data(model: nn.Module, bundle: DataBundle) -> DataBundle:
    """`bundle` as `model` must see it: pretrained weights expect their own mean/std, scratch models keep the
    data's statistics. Returns a new bundle rather than changing the caller's, which may be shared (tune's
    folds, compare's data cache) or used before training (transfer's feature extraction calls this too)."""
    if getattr(model, "num_classes", len(bundle.classes)) != len(bundle.classes):
        raise DaxiaoError(f"The model has {model.num_classes} outputs but the data has {len(bundle.classes)} "
                          "classes; create it with num_classes=len(classes).")
    mcfg = getattr(model, "pretrained_cfg", {}) or {}
    if mcfg.get("mean") is None or len(mcfg["mean"]) != bundle.preprocess.channels:
        return bundle
    pre = replace(bundle.preprocess, mean=tuple(mcfg["mean"]), std=tuple(mcfg["std"]))
    return replace(bundle, preprocess=pre)


def _describe(model: nn.Module, bundle: DataBundle, bf16: bool, device: torch.device, start: int) -> None:
    pre, name = bundle.preprocess, getattr(model, "daxiao_name", type(model).__name__)
    console.print(f"[bold]{name}[/] on {bundle.source}: {len(bundle.train)} train / {len(bundle.val)} "
                  f"val images, {len(bundle.classes)} classes, {pre.channels}x{pre.image_size}x{pre.image_size}, "
                  f"{'bf16' if bf16 else 'fp32'} on {device}" + (f", resuming at epoch {start + 1}" if start else ""))
    counts = bundle.class_counts()
    if len(counts) <= 20:
        console.print("class counts (train): " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if bundle.skipped:
        path, why = bundle.skipped[0]
        console.print(f"[yellow]skipped {len(bundle.skipped)} unreadable image file(s)[/], e.g. {path} ({why})")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, transient=True)
