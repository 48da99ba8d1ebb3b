"""A model ready to train: `prepare` builds its loaders, loss, optimizer, schedule and precision from one
config. `fit` runs one session; tune's cross-validation runs one per fold, in step."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..allocator import reuse_memory
from ..config import RunConfig
from ..data import Batch, DataBundle, FeatureSplit, Preprocess, make_loader
from ..data.augment import build_augment
from ..errors import DaxiaoError
from . import distributed
from .loop import LoopState, evaluate, forward
from .losses import build_criterion, class_weights
from .optim import build_optimizer, build_scheduler
from .precision import autocast, choose_bf16, grad_scaler


@dataclass
class Session:
    model: nn.Module
    train_loader: object
    val_loader: object | None
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    bf16: bool
    device: torch.device
    preprocess: Preprocess          # what the loaders apply: saved with the weights
    classes: list[str]
    state: LoopState = field(default_factory=LoopState)
    stop_training: bool = False     # a callback sets it to end training after the current batch
    fp16: bool = False              # fp16 autocast, with `scaler`
    scaler: torch.amp.GradScaler | None = None  # fp16's loss scaler; its state is checkpointed
    train_model: nn.Module | None = None  # what the training step calls: `model` in DDP and/or torch.compile
    val_full: object | None = None  # data-parallel: the whole val set on one rank (the confusion matrix)

    @property
    def net(self) -> nn.Module:
        """The module the training step runs (`model` itself unless wrapped); `model` is what is saved."""
        return self.model if self.train_model is None else self.train_model

    tta: str = "none"               # test-time views for every evaluation (the run's train.tta)

    def evaluate(self, collect: bool = False) -> dict:
        """Val metrics; data-parallel, each rank scores its shard and the sums are reduced (`collect`, which
        rank 0 alone asks for, scores the whole set here instead)."""
        loader = self.val_full if collect and self.val_full is not None else self.val_loader
        return evaluate(self.model, loader, self.criterion, self.bf16, self.device, collect, fp16=self.fp16,
                        tta=self.tta)


def prepare(model: nn.Module, bundle: DataBundle, cfg: RunConfig, optimizer: torch.optim.Optimizer | None = None,
            criterion: nn.Module | None = None) -> Session:
    """Everything `fit` sets up before its first epoch, from a validated config. A bundle without a val
    split gets no validation loader (Keras' fit without validation data). `optimizer` and `criterion`,
    when given, are used as they are instead of the ones the config names."""
    reuse_memory()  # freed activation buffers reused, not unmapped and faulted in again (daxiao.allocator)
    t = cfg.train
    bundle = match_model_to_data(model, bundle)
    device, pre = distributed.setup(t.device, t.threads), bundle.preprocess  # torchrun job: joins its group
    shard = (distributed.rank(), distributed.world_size()) if distributed.is_distributed() else None
    model.to(device).to(memory_format=torch.channels_last)  # measured ~2x faster convs on CPU (oneDNN)
    augment = build_augment(cfg.data.augment, len(bundle.classes))  # on uint8 batches, before normalization
    train_loader = make_loader(bundle.train, t.batch_size, pre, shuffle=True, seed=t.seed, workers=cfg.data.workers,
                               balanced=cfg.data.balanced_sampling, augment=augment, shard=shard, device=device)
    val_loader = val_full = None
    if bundle.val is not None:  # never augmented
        val_bs = max(256, 2 * t.batch_size)
        val_loader = make_loader(bundle.val, val_bs, pre, workers=cfg.data.workers, shard=shard, pad=False,
                                 device=device)
        if shard is not None:
            val_full = make_loader(bundle.val, val_bs, pre, workers=cfg.data.workers, device=device)
    if criterion is None:
        counts = list(bundle.class_counts().values())
        criterion = build_criterion(t.loss, class_weights(t.class_weight, counts))
    criterion = criterion.to(device)
    optimizer = optimizer or build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, len(train_loader), t.epochs)
    # one decision for all ranks: rank 0 times, the others take its answer. --deterministic: a timing rule
    # must not choose the arithmetic (two runs could choose differently)
    precision = "fp32" if t.deterministic and t.precision == "auto" else t.precision
    bf16 = distributed.on_rank_zero(lambda: choose_bf16(precision, device,
                                                        _train_step(model, train_loader, criterion, device)))
    fp16 = precision == "fp16"
    net = distributed.wrap(model, device, features=isinstance(bundle.train, FeatureSplit))
    if t.compile:
        net = torch.compile(net)  # the training forward only; evaluation runs the plain module
    return Session(model, train_loader, val_loader, criterion, optimizer, scheduler, bf16, device, pre,
                   list(bundle.classes), fp16=fp16, scaler=grad_scaler(device, fp16),
                   train_model=None if net is model else net, val_full=val_full, tta=t.tta)


def _train_step(model: nn.Module, loader, criterion: nn.Module, device: torch.device):
    """One forward and backward pass on a copy of the model and a real batch: what the bf16 rule times."""
    holder: dict = {}

    def step(bf16: bool) -> None:
        if not holder:  # built on first use: a fixed precision never pays for the copy
            holder["batch"] = next(iter(loader)).to(device)
            holder["probe"] = copy.deepcopy(model).train()  # must not touch the real weights or BN statistics
        batch: Batch = holder["batch"]
        probe = holder["probe"]
        with autocast(device, bf16):
            loss = criterion(forward(probe, batch).float(), batch.targets)
        loss.backward()
        probe.zero_grad(set_to_none=True)

    return step


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
