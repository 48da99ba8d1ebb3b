"""Datasets -> splits -> loaders. Small built-in sets live in memory as uint8 tensors and are batched
on tensors; image folders and CSV lists go through a DataLoader with workers. Both loaders yield
normalized float batches, so the trainer cannot tell them apart."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DaxiaoError, did_you_mean
from .builtin import BUILTIN
from .folder import (
    FileList,
    ImageFiles,
    check_files,
    collate_skip_none,
    read_csv_list,
    scan_folder,
    split_root,
)
from .preprocess import Preprocess, channel_convert, resize_uint8

__all__ = ["BUILTIN", "DataBundle", "Preprocess", "TensorSplit", "FileSplit", "load_data", "make_loader"]

FOLDER_DEFAULT_SIZE = 224  # the size ImageNet backbones were trained at; --image-size overrides


@dataclass
class TensorSplit:
    images: torch.Tensor  # uint8 (N, C, H, W); or float (N, F) backbone features, which loaders pass through
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> torch.Tensor:
        return self.labels

    def names(self) -> list[str]:
        return [str(i) for i in range(len(self))]


@dataclass
class FileSplit:
    files: FileList

    def __len__(self) -> int:
        return len(self.files.paths)

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor(self.files.labels, dtype=torch.long)

    def names(self) -> list[str]:
        return [str(p) for p in self.files.paths]


Split = TensorSplit | FileSplit


@dataclass
class DataBundle:
    train: Split
    val: Split
    test: Split | None
    classes: list[str]
    preprocess: Preprocess
    source: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, TensorSplit)

    def split(self, name: str) -> Split:
        s = getattr(self, name, None)
        if s is None:
            raise DaxiaoError(f"{self.source} has no {name} split; use --split val or train.")
        return s

    def class_counts(self, split: str = "train") -> dict[str, int]:
        counts = Counter(self.split(split).targets.tolist())
        return {c: counts[i] for i, c in enumerate(self.classes)}


def load_data(cfg: DataConfig, seed: int = 0, preprocess: Preprocess | None = None,
              classes: list[str] | None = None) -> DataBundle:
    """Load `cfg.data` (a built-in name, an image folder, or a CSV) into train/val/test splits.

    Args:
        cfg: the data section of the run config.
        seed: fixes the stratified train/val split.
        preprocess: a trained model's preprocessing, to load data exactly as it was seen in training.
        classes: a trained model's class names; the data's classes must be among them.
    """
    if cfg.data in BUILTIN:
        return _load_builtin(cfg, seed, preprocess, classes)
    path = Path(cfg.data).expanduser()
    if not path.exists():
        hint = did_you_mean(cfg.data, BUILTIN)
        raise DaxiaoError(f"--data {cfg.data!r} is neither a built-in dataset ({', '.join(BUILTIN)}) nor an "
                          f"existing path.{hint}")
    return _load_files(cfg, path, seed, preprocess, classes)


def stratified_split(labels: torch.Tensor | list[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) with every class in proportion, fixed by `seed`."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(labels)
    counts = Counter(y.tolist())
    if min(counts.values()) < 2:
        raise DaxiaoError("A class has a single image, too few to split off validation data; "
                          "add images or pass a separate --val set.")
    n_val = max(len(counts), math.ceil(len(y) * fraction))
    if n_val >= len(y):
        raise DaxiaoError(f"Too few images ({len(y)}) to split {fraction:.0%} off for validation; pass --val.")
    return train_test_split(np.arange(len(y)), test_size=n_val, stratify=y, random_state=seed)


def _check_classes(classes: list[str], known: list[str] | None, where: str) -> None:
    if len(classes) < 2 and known is None:
        raise DaxiaoError(f"{where} has only one class ({', '.join(classes)}); a classifier needs at least two.")
    if known is not None and (extra := [c for c in classes if c not in known]):
        raise DaxiaoError(f"{where} has classes the model was not trained on: {', '.join(extra[:5])} "
                          f"(the model knows {', '.join(known[:10])}{'...' if len(known) > 10 else ''}).")


def _load_builtin(cfg: DataConfig, seed: int, pre: Preprocess | None, known: list[str] | None) -> DataBundle:
    xtr, ytr, xte, yte, classes = BUILTIN[cfg.data].loader(Path(cfg.data_dir) if cfg.data_dir else None)
    _check_classes(classes, known, cfg.data)
    if known is not None:  # a model's class order wins
        remap = torch.tensor([known.index(c) for c in classes])
        ytr, yte, classes = remap[ytr], remap[yte], known
    channels = pre.channels if pre else (cfg.channels or xtr.shape[1])
    size = pre.image_size if pre else (cfg.image_size or xtr.shape[-1])
    # Grey to RGB last, as a view: the pixels are stored once and a batch's copy is made when it is indexed
    # (Fashion-MNIST at 224 px for an ImageNet backbone: 3.5 GB rather than 10.5 GB).
    xtr, xte = (resize_uint8(channel_convert(x, min(channels, x.shape[1])), size) for x in (xtr, xte))
    tr, va = stratified_split(ytr, cfg.val_split, seed)
    train, val, test = (TensorSplit(channel_convert(x, channels, view=True), y)
                        for x, y in ((xtr[tr], ytr[tr]), (xtr[va], ytr[va]), (xte, yte)))
    if pre is None:  # per-channel statistics of the training split
        mean, std = channel_stats(train.images)
        pre = Preprocess(size, channels, cfg.resize, mean, std)
    return DataBundle(train, val, test, classes, pre, cfg.data)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of uint8 images in [0, 1], a chunk at a time: a float copy of a
    large set at 224 px would not fit in memory."""
    n = images.shape[0] * images.shape[2] * images.shape[3]
    s = torch.zeros(images.shape[1], dtype=torch.float64)
    s2 = torch.zeros_like(s)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].double() / 255
        s += x.sum((0, 2, 3))
        s2 += (x * x).sum((0, 2, 3))
    mean = s / n
    var = ((s2 - n * mean * mean) / max(n - 1, 1)).clamp_min(0)
    return tuple(mean.tolist()), tuple(var.sqrt().clamp_min(1e-3).tolist())


def _file_list(path: Path, known: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    """Files, labels and classes of a folder or CSV; with `known` (a model's classes) labels index those."""
    if path.is_file() and path.suffix.lower() == ".csv":
        paths, labels, found = read_csv_list(path)
    elif path.is_file():
        raise DaxiaoError(f"{path} is a file; --data takes a folder of class sub-folders or a .csv list.")
    else:
        paths, labels, found = scan_folder(path)
    _check_classes(found, known, str(path))
    if known is None:
        return paths, labels, found
    return paths, [known.index(found[i]) for i in labels], known


def _load_files(cfg: DataConfig, path: Path, seed: int, pre: Preprocess | None,
                known: list[str] | None) -> DataBundle:
    roots = split_root(path) if path.is_dir() else None
    train_src = roots["train"] if roots else path
    paths, labels, classes = _file_list(train_src, known)
    train = check_files(paths, labels, classes, str(train_src))
    skipped = list(train.skipped)
    val_src = Path(cfg.val) if cfg.val else (roots["val"] if roots else None)
    if val_src is not None:
        if not val_src.exists():
            raise DaxiaoError(f"No such validation path: {val_src}.")
        vp, vl, _ = _file_list(val_src, classes)
        val = check_files(vp, vl, classes, str(val_src))
        skipped += val.skipped
    elif known is not None:  # evaluating a trained model: every file is evaluation data
        val = train
    else:
        tr, va = stratified_split(train.labels, cfg.val_split, seed)
        val = FileList([train.paths[i] for i in va], [train.labels[i] for i in va], classes, train.grey)
        train = FileList([train.paths[i] for i in tr], [train.labels[i] for i in tr], classes, train.grey,
                         train.skipped)
    test = None
    if roots and "test" in roots:
        tp, tl, _ = _file_list(roots["test"], classes)
        test = check_files(tp, tl, classes, str(roots["test"]))
        skipped += test.skipped
    if pre is None:
        channels = cfg.channels or (1 if train.grey and val.grey else 3)
        pre = Preprocess(cfg.image_size or FOLDER_DEFAULT_SIZE, channels, cfg.resize)
        pre.mean, pre.std = _folder_stats(train, pre, seed)
    return DataBundle(FileSplit(train), FileSplit(val), FileSplit(test) if test else None, classes, pre,
                      str(path), skipped)


def _folder_stats(files: FileList, pre: Preprocess, seed: int, n: int = 256) -> tuple[tuple, tuple]:
    """Per-channel mean/std from up to `n` training images (seeded sample): enough for normalization."""
    idx = random.Random(seed).sample(range(len(files.paths)), min(n, len(files.paths)))
    ds = ImageFiles([files.paths[i] for i in idx], [0] * len(idx), pre)
    x = torch.stack([item[0] for item in (ds[i] for i in range(len(ds))) if item is not None]).float() / 255
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).clamp_min(1e-3).tolist())


BatchAugment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentation draws: a pure function, so resuming is exact."""
    return seed * 100_003 + epoch


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-example sampling weights that draw every class equally often (1 / class count)."""
    counts = torch.bincount(labels).clamp_min(1).double()
    return 1.0 / counts[labels]


class TensorLoader:
    """Batches an in-memory uint8 set with tensor indexing: no per-sample Python, no worker processes.

    The shuffle order and the augmentation draws are pure functions of (seed, epoch), so a resumed run
    sees the same batches. `augment` runs on the uint8 batch, before normalization; it may return soft
    targets (Mixup/CutMix) in place of the labels.
    """

    def __init__(self, split: TensorSplit, batch_size: int, preprocess: Preprocess, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, balanced: bool = False, augment: BatchAugment | None = None):
        self.split, self.batch_size, self.pre = split, batch_size, preprocess
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        self.weights = balanced_weights(split.labels) if balanced else None
        self.augment = augment

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.split)
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.weights is not None:  # balanced sampling: classes drawn evenly, with replacement
            order = torch.multinomial(self.weights, n, replacement=True, generator=g)
        elif self.shuffle:
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x, y = self.split.images[idx], self.split.labels[idx]
            self.batch_index = idx  # which samples this batch holds: distillation looks up cached teacher logits
            if self.augment is not None:
                x, y = self.augment(x, y, g)
            yield (x if x.is_floating_point() else self.pre.normalize(x)), y  # float: cached features (transfer.py)


class FileLoader:
    """A DataLoader over image files with workers; same interface and seeding as TensorLoader."""

    def __init__(self, split: FileSplit, batch_size: int, preprocess: Preprocess, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, workers: int = 2, balanced: bool = False,
                 augment: BatchAugment | None = None):
        self.seed, self.epoch, self.pre, self.augment = seed, 0, preprocess, augment
        self.generator = torch.Generator()
        ds = ImageFiles(split.files.paths, split.files.labels, preprocess)
        sampler = None
        if balanced:
            weights = balanced_weights(torch.tensor(split.files.labels))
            sampler = torch.utils.data.WeightedRandomSampler(weights, len(weights), generator=self.generator)
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, drop_last=drop_last,
            num_workers=workers, collate_fn=collate_skip_none, generator=self.generator,
            persistent_workers=workers > 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch) + 1)  # augmentation's own stream
        for x, y in self.loader:
            if len(y):
                if self.augment is not None:  # the same batched tensor path as in-memory sets
                    x, y = self.augment(x, y, g)
                yield self.pre.normalize(x), y


def make_loader(split: Split, batch_size: int, preprocess: Preprocess, shuffle: bool = False, seed: int = 0,
                workers: int = 2, drop_last: bool = False, balanced: bool = False,
                augment: BatchAugment | None = None) -> TensorLoader | FileLoader:
    """Batches of (normalized float images, labels or soft targets) from either kind of split."""
    if isinstance(split, TensorSplit):
        return TensorLoader(split, batch_size, preprocess, shuffle, seed, drop_last, balanced, augment)
    return FileLoader(split, batch_size, preprocess, shuffle, seed, drop_last, workers, balanced, augment)
