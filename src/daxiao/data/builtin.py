"""Built-in datasets, loaded whole into memory as uint8 tensors (N, C, H, W).

Each loader returns ``(train_x, train_y, test_x, test_y, classes)``. Nothing here reaches the network
except torchvision's real download, tried only after the local places are exhausted.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DaxiaoError

Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def cache_dir() -> Path:
    """Where downloads go: $DAXIAO_CACHE, else ~/.cache/daxiao."""
    return Path(os.environ.get("DAXIAO_CACHE", Path.home() / ".cache" / "daxiao"))


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    loader: Callable[[Path | None], Arrays]
    where: str  # shown by `daxiao datasets`


def load_digits_arrays(data_dir: Path | None = None) -> Arrays:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0-16). The test set is a fixed stratified
    20 % (random_state=0), so test accuracy is comparable across runs whatever their --seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(np.rint(d.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=d.target, random_state=0)
    return x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)]


def read_idx(path: Path) -> np.ndarray:
    """Read an idx(.gz) file (the MNIST format: magic, dims, big-endian sizes, raw uint8)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_files(folder: Path) -> dict[str, Path] | None:
    found = {}
    for part in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        for name in (part + ".gz", part):
            if (folder / name).is_file():
                found[part] = folder / name
                break
        else:
            return None
    return found


def _mnist_like(name: str, tv_name: str, classes: list[str], defaults: list[Path]) -> Callable:
    def load(data_dir: Path | None) -> Arrays:
        tried = [data_dir] if data_dir else []
        tried += defaults + [cache_dir() / tv_name / "raw"]
        for folder in tried:
            files = _idx_files(Path(folder))
            if files:
                arr = {k: torch.from_numpy(read_idx(p).copy()) for k, p in files.items()}
                return (arr["train-images-idx3-ubyte"].unsqueeze(1), arr["train-labels-idx1-ubyte"].long(),
                        arr["t10k-images-idx3-ubyte"].unsqueeze(1), arr["t10k-labels-idx1-ubyte"].long(), classes)
        _download(name, tv_name, tried)
        return load(None)

    return load


def _download(name: str, tv_name: str, tried: list) -> None:
    import torchvision

    try:
        for train in (True, False):
            getattr(torchvision.datasets, tv_name)(str(cache_dir()), train=train, download=True)
    except Exception as e:  # offline: urllib raises URLError, some mirrors HTTPError, a proxy OSError
        hint = " or `apt-get install dataset-fashion-mnist`" if name == "fashion-mnist" else ""
        raise DaxiaoError(
            f"{name}: no idx files in {', '.join(map(str, tried))} and the download failed "
            f"({type(e).__name__}). Put the four *-idx*-ubyte.gz files in one of those folders "
            f"(--data-dir DIR){hint}."
        ) from None


def _cifar(name: str, tv_name: str) -> Callable:
    def load(data_dir: Path | None) -> Arrays:
        import torchvision

        root = data_dir or cache_dir()
        cls = getattr(torchvision.datasets, tv_name)
        try:
            sets = [cls(str(root), train=t, download=False) for t in (True, False)]
        except RuntimeError:
            try:
                sets = [cls(str(root), train=t, download=True) for t in (True, False)]
            except Exception as e:
                raise DaxiaoError(
                    f"{name}: not found in {root} and the download failed ({type(e).__name__}). "
                    f"Put the extracted python-version archive there (--data-dir DIR) or go online once."
                ) from None
        xs = [torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous() for s in sets]
        ys = [torch.tensor(s.targets, dtype=torch.long) for s in sets]
        return xs[0], ys[0], xs[1], ys[1], list(sets[0].classes)

    return load


BUILTIN: dict[str, BuiltinDataset] = {
    d.name: d
    for d in [
        BuiltinDataset("digits", load_digits_arrays,
                       "bundled with scikit-learn (8x8 grey, 10 classes, 1,797 images); never downloads"),
        BuiltinDataset("fashion-mnist",
                       _mnist_like("fashion-mnist", "FashionMNIST", FASHION_CLASSES, [DEBIAN_FASHION]),
                       f"--data-dir, then {DEBIAN_FASHION} (Debian dataset-fashion-mnist), "
                       "then download to $DAXIAO_CACHE/FashionMNIST"),
        BuiltinDataset("mnist", _mnist_like("mnist", "MNIST", [str(i) for i in range(10)], []),
                       "--data-dir, then download to $DAXIAO_CACHE/MNIST"),
        BuiltinDataset("cifar10", _cifar("cifar10", "CIFAR10"),
                       "--data-dir, else $DAXIAO_CACHE (torchvision's cifar-10-batches-py), else download"),
        BuiltinDataset("cifar100", _cifar("cifar100", "CIFAR100"),
                       "--data-dir, else $DAXIAO_CACHE (torchvision's cifar-100-python), else download"),
    ]
}
