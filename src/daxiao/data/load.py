"""`load_data`: a built-in name, an image folder or a CSV list -> a `DataBundle` of train/val/test splits."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import DaxiaoError, did_you_mean
from .builtin import BUILTIN
from .bundle import DataBundle, FileSplit, TensorSplit, channel_stats, stratified_split
from .folder import FileList, ImageFiles, check_files, drop_empty_classes, read_csv_list, scan_folder, split_root
from .preprocess import Preprocess, channel_convert, resize_uint8

FOLDER_DEFAULT_SIZE = 224  # the size ImageNet backbones were trained at; --image-size overrides


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
    paths, labels, found = _file_list(train_src, None)
    # A class folder with no readable image contributes nothing: left out (with a warning) before the classes
    # are checked, so a folder of only broken files neither stops training nor trips a trained model's classes.
    train = drop_empty_classes(check_files(paths, labels, found, str(train_src)), str(train_src))
    _check_classes(train.classes, known, str(train_src))
    if known is not None:  # labels index the model's classes, in its order
        train = FileList(train.paths, [known.index(train.classes[i]) for i in train.labels], known, train.grey,
                         train.skipped)
    classes = train.classes
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
