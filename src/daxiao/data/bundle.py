"""Splits and the bundle that carries them: what a data set is once loaded, whatever it came from.

Three kinds of split, each its own type so no layer has to guess from a tensor's rank:
    TensorSplit   uint8 images (N, C, H, W) in memory: built-in sets, arrays, decoded folders
    FileSplit     image files decoded per batch by a DataLoader
    FeatureSplit  float features (N, F) of a frozen backbone: transfer learning's feature cache
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import DaxiaoError
from .folder import FileList
from .preprocess import Preprocess


class _InMemory:
    """What the two in-memory splits share: labels as a tensor, and row selection by index."""

    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> torch.Tensor:
        return self.labels

    def names(self) -> list[str]:
        return [str(i) for i in range(len(self))]

    def take(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.long)
        return type(self)(*(getattr(self, f.name)[idx] for f in fields(self)))


@dataclass
class TensorSplit(_InMemory):
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)


@dataclass
class FeatureSplit(_InMemory):
    features: torch.Tensor  # float32 (N, F): pooled backbone features, fed to a model's head
    labels: torch.Tensor    # int64 (N,)


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

    def take(self, idx) -> FileSplit:
        f = self.files
        return FileSplit(FileList([f.paths[i] for i in idx], [f.labels[i] for i in idx], f.classes, f.grey))


Split = TensorSplit | FileSplit | FeatureSplit


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


def subset(bundle: DataBundle, train: int | None, val: int | None, test: int | None, seed: int) -> DataBundle:
    """A stratified, seeded subset of each in-memory split (the same images for every model)."""
    def take(split, n: int | None, salt: int):
        if not n or n >= len(split):
            return split
        if not isinstance(split, TensorSplit):
            raise DaxiaoError("--train-images/--val-images/--test-images need a built-in (in-memory) data set.")
        _, idx = stratified_split(split.labels, n / len(split), seed + salt)
        return split.take(sorted(idx))

    return replace(bundle, train=take(bundle.train, train, 0), val=take(bundle.val, val, 1),
                   test=take(bundle.test, test, 2) if bundle.test is not None else None)


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
