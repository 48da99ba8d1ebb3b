"""Loaders: every split kind becomes a stream of `Batch`es, the one thing the training loop reads.

    TensorLoader   in-memory uint8 images, batched by tensor indexing (no per-sample Python, no workers)
    FeatureLoader  in-memory backbone features, batched the same way; never normalized or augmented
    FileLoader     a DataLoader with workers over image files

The shuffle order and the augmentation draws are pure functions of (seed, epoch) in all three, so a
resumed run sees the same batches. Data-parallel (``shard=(rank, world)``): every rank draws the same
epoch order and takes its interleaved slice of it, padded so all ranks take the same number of steps (as
torch's DistributedSampler; an eval loader is not padded, so each sample is scored exactly once), and
draws its augmentation from its own stream. With ``device`` set to a GPU, in-memory sets are copied there
once and augmented and normalized there; file batches come through pinned memory with non-blocking copies.

Augmentation runs on the uint8 batch, before normalization, and may
return soft targets (Mixup/CutMix) in place of the labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .bundle import FeatureSplit, FileSplit, Split, TensorSplit
from .folder import ImageFiles
from .preprocess import Preprocess

BatchAugment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Batch:
    """One step's data: the loop's whole input contract."""

    inputs: torch.Tensor   # normalized float images (B, C, H, W), or features (B, F) when kind == "features"
    targets: torch.Tensor  # class indices (B,), or soft targets (B, K) after Mixup/CutMix
    index: torch.Tensor    # positions of these samples in their split (distillation looks teacher logits up)
    kind: str = "images"   # "images" | "features"

    def __len__(self) -> int:
        return len(self.index)

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        x = self.inputs.to(device, non_blocking=non_blocking)
        if self.kind == "images":  # channels_last: measured ~2x faster convolutions on CPU (oneDNN)
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x, self.targets.to(device, non_blocking=non_blocking), self.index, self.kind)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentation draws: a pure function, so resuming is exact."""
    return seed * 100_003 + epoch


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-example sampling weights that draw every class equally often (1 / class count)."""
    counts = torch.bincount(labels).clamp_min(1).double()
    return 1.0 / counts[labels]


def _order(n: int, g: torch.Generator, shuffle: bool, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is not None:  # balanced sampling: classes drawn evenly, with replacement
        return torch.multinomial(weights, n, replacement=True, generator=g)
    return torch.randperm(n, generator=g) if shuffle else torch.arange(n)


Shard = tuple[int, int]  # (rank, world size)


def shard_order(order: torch.Tensor, shard: Shard | None, pad: bool = True) -> torch.Tensor:
    """Rank r's part of an epoch's order: positions r, r + world, ...; with `pad`, the order is first
    extended by its own head to a multiple of world so every rank gets ceil(n / world) samples."""
    if shard is None or shard[1] == 1:
        return order
    rank, world = shard
    if pad and len(order) % world:
        total = math.ceil(len(order) / world) * world
        order = torch.cat([order] * math.ceil(total / max(len(order), 1)))[:total]
    return order[rank::world]


def shard_len(n: int, shard: Shard | None, pad: bool = True) -> int:
    if shard is None or shard[1] == 1:
        return n
    rank, world = shard
    return math.ceil(n / world) if pad else len(range(rank, n, world))


def augment_generator(seed: int, epoch: int, shard: Shard | None, offset: int = 0) -> torch.Generator | None:
    """A rank's own augmentation stream when data-parallel (None in one process: the loader's own stream, as
    before), from (seed, epoch, rank) only."""
    if shard is None or shard[1] == 1:
        return None
    return torch.Generator().manual_seed(epoch_seed(seed, epoch) + offset + 1_000_003 * (shard[0] + 1))


class RankSampler(torch.utils.data.Sampler):
    """A DataLoader's indices: the order `TensorLoader` draws (shuffled or balanced, from (seed, epoch)), for
    one rank sharded by `shard_order`. The same (seed, epoch) gives the same batches from files as from their
    decoded tensor, so cached and uncached training are the same computation; `generator`, left just after
    the order was drawn, continues into the augmentation draws exactly as TensorLoader's does. torch's
    DistributedSampler would pad eval sets with repeats (scoring some files twice) and cannot draw balanced
    classes, hence this one rule for both loaders."""

    def __init__(self, n: int, shard: Shard | None, shuffle: bool, weights: torch.Tensor | None, seed: int,
                 pad: bool = True):
        self.n, self.shard, self.shuffle, self.weights, self.seed, self.pad = n, shard, shuffle, weights, seed, pad
        self.epoch = 0
        self.generator: torch.Generator | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return shard_len(self.n, self.shard, self.pad)

    def __iter__(self) -> Iterator[int]:
        self.generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = _order(self.n, self.generator, self.shuffle, self.weights)
        return iter(shard_order(order, self.shard, self.pad).tolist())


class TensorLoader:
    """Batches of an in-memory split (images or features) by tensor indexing."""

    def __init__(self, split: TensorSplit | FeatureSplit, batch_size: int, preprocess: Preprocess,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False, balanced: bool = False,
                 augment: BatchAugment | None = None, shard: Shard | None = None, pad: bool = True,
                 device: torch.device | None = None):
        self.split, self.batch_size, self.pre = split, batch_size, preprocess
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        self.weights = balanced_weights(split.labels) if balanced else None
        self.features = isinstance(split, FeatureSplit)
        assert not (self.features and augment), "features are fixed: there are no pixels to augment"
        self.augment, self.shard, self.pad = augment, shard, pad
        self.device = device if device is not None and device.type != "cpu" else None
        # the whole set on the GPU once: batches are then indexed, augmented and normalized there
        self.data = split.features if self.features else split.images
        self.labels = split.labels
        if self.device is not None:
            self.data, self.labels = self.data.to(self.device), self.labels.to(self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = shard_len(len(self.split), self.shard, self.pad)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = shard_order(_order(len(self.split), g, self.shuffle, self.weights), self.shard, self.pad)
        ga = augment_generator(self.seed, self.epoch, self.shard) or g
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            at = idx if self.device is None else idx.to(self.device)
            y = self.labels[at]
            if self.features:
                yield Batch(self.data[at], y, idx, "features")
                continue
            x = self.data[at]
            if self.augment is not None:
                x, y = self.augment(x, y, ga)
            yield Batch(self.pre.normalize(x), y, idx)


class FileLoader:
    """A DataLoader over image files with workers; same interface, order and augmentation draws as
    TensorLoader. A file that fails to decode now (changed on disk since the check) is left out of its
    batch and counted; the count is reported once per pass."""

    def __init__(self, split: FileSplit, batch_size: int, preprocess: Preprocess, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, workers: int = 2, balanced: bool = False,
                 augment: BatchAugment | None = None, shard: Shard | None = None, pad: bool = True,
                 device: torch.device | None = None):
        self.seed, self.epoch, self.pre, self.augment, self.shard = seed, 0, preprocess, augment, shard
        self.batch_size = batch_size
        self.device = device if device is not None and device.type == "cuda" else None
        self.dropped = 0  # files that failed during the last pass
        ds = ImageFiles(split.files.paths, split.files.labels, preprocess)
        weights = balanced_weights(torch.tensor(split.files.labels)) if balanced else None
        self.sampler = RankSampler(len(ds), shard, shuffle, weights, seed, pad)
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, sampler=self.sampler, drop_last=drop_last, num_workers=workers,
            collate_fn=collate_skip_none, persistent_workers=workers > 0, pin_memory=self.device is not None,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(seed))  # its workers' seeds: never drawn from the global RNG

    def set_epoch(self, epoch: int) -> None:
        self.epoch = self.sampler.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        self.dropped, expected, g = 0, 0, None
        for x, y, idx, asked in self.loader:
            self.dropped += asked - len(y)
            expected += asked
            if len(y):
                if self.device is not None:  # pinned uint8 batch: the copy overlaps; the rest runs on the GPU
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if self.augment is not None:  # the same draws as TensorLoader: its generator, after the order
                    g = g or augment_generator(self.seed, self.epoch, self.shard) or self.sampler.generator
                    x, y = self.augment(x, y, g)
                yield Batch(self.pre.normalize(x), y, idx)
        if self.dropped:
            from ..console import console

            console.print(f"warning: {self.dropped} of {expected} image files failed to decode during this pass "
                          "(changed on disk since they were checked); they were left out", markup=False)


def seed_worker(worker_id: int) -> None:
    """Python's and NumPy's generators in a loader worker seeded from torch's (itself drawn from the loader's
    (seed, epoch) generator), as PyTorch's reproducibility notes advise: a worker's draws repeat on resume."""
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def collate_skip_none(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Stack (image, label, index) items, dropping files that failed to decode (None); also how many were asked."""
    asked = len(batch)
    batch = [b for b in batch if b is not None]
    if not batch:
        return (torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
                asked)
    return (torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch], dtype=torch.long),
            torch.tensor([b[2] for b in batch], dtype=torch.long), asked)
def make_loader(split: Split, batch_size: int, preprocess: Preprocess, shuffle: bool = False, seed: int = 0,
                workers: int = 2, drop_last: bool = False, balanced: bool = False,
                augment: BatchAugment | None = None, shard: Shard | None = None, pad: bool = True,
                device: torch.device | None = None) -> TensorLoader | FileLoader:
    """Batches of any split kind (see `Batch`); `shard` = (rank, world) for data-parallel training, `device`
    where batches are made (in-memory sets and augmentation on a GPU; pinned memory for files)."""
    if isinstance(split, FileSplit):
        return FileLoader(split, batch_size, preprocess, shuffle, seed, drop_last, workers, balanced, augment,
                          shard, pad, device)
    return TensorLoader(split, batch_size, preprocess, shuffle, seed, drop_last, balanced, augment, shard, pad,
                        device)
