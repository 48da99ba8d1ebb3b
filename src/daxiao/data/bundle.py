"""Splits and the bundle that carries them: what a data set is once loaded, whatever it came from.

Three kinds of split, each its own type so no layer has to guess from a tensor's rank:
    TensorSplit   uint8 images (N, C, H, W) in memory: built-in sets, arrays, decoded folders
    FileSplit     image files decoded per batch by a DataLoader
    FeatureSplit  float features (N, F) of a frozen backbone: transfer learning's feature cache
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import DaxiaoError
from .folder import FileList
from .preprocess import Preprocess


@dataclass
class TensorSplit:
    images: torch.Tensor  # uint8 (N, C, H, W), in memory or memory-mapped (a decoded folder's disk cache)
    labels: torch.Tensor  # int64 (N,)
    paths: list[Path] | None = None  # a decoded folder's files, row by row: predictions name them

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> torch.Tensor:
        return self.labels

    def names(self) -> list[str]:
        return [str(p) for p in self.paths] if self.paths is not None else [str(i) for i in range(len(self))]

    def take(self, idx) -> TensorSplit:
        idx = torch.as_tensor(idx, dtype=torch.long)
        paths = [self.paths[i] for i in idx.tolist()] if self.paths is not None else None
        return TensorSplit(self.images[idx], self.labels[idx], paths)


@dataclass
class FeatureSplit:
    features: torch.Tensor  # float32 (N, F): pooled backbone features, fed to a model's head
    labels: torch.Tensor    # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> torch.Tensor:
        return self.labels

    def names(self) -> list[str]:
        return [str(i) for i in range(len(self))]

    def take(self, idx) -> FeatureSplit:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return FeatureSplit(self.features[idx], self.labels[idx])


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
    size_rule: str = ""  # which rule chose the image size (the run's first line says it)
    dropped: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)  # split -> its skipped files

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


def channel_sums(images: torch.Tensor) -> tuple[list[int], list[int], int]:
    """Exact integer per-channel sums and sums of squares of uint8 images (N, C, H, W), a chunk at a time
    (about 4 M values: the int64 copy stays small at any image size)."""
    c = images.shape[1]
    s, s2 = [0] * c, [0] * c
    chunk = max(1, (1 << 22) // max(1, c * images.shape[2] * images.shape[3]))
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.int64)
        for k, (a, b) in enumerate(zip(x.sum((0, 2, 3)).tolist(), (x * x).sum((0, 2, 3)).tolist(), strict=True)):
            s[k] += a
            s2[k] += b
    return s, s2, len(images) * images.shape[2] * images.shape[3]


def stats_from_sums(sums: tuple[list[int], list[int], int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and unbiased std in [0, 1] from exact integer sums: the same numbers whatever the summing order."""
    s, s2, n = sums
    if n == 0:
        return (0.5,) * len(s), (0.5,) * len(s)
    mean = tuple(a / (n * 255) for a in s)
    std = tuple(max(((b * n - a * a) / (n * max(n - 1, 1))) ** 0.5 / 255, 1e-3) for a, b in zip(s, s2, strict=True))
    return mean, std


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of uint8 images in [0, 1], from exact integer sums a chunk at a
    time: a float copy of a large set at 224 px would not fit, and exact sums give the same numbers for a
    folder decoded in any order (or summed image by image while checking) as for the same pixels in memory."""
    return stats_from_sums(channel_sums(images))
