"""`load_data`: a built-in name, an image folder or a CSV list -> a `DataBundle` of train/val/test splits."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import DaxiaoError, did_you_mean
from . import decoded as dc
from .builtin import BUILTIN
from .bundle import DataBundle, FileSplit, TensorSplit, channel_stats, stats_from_sums, stratified_split
from .decode import check_file
from .folder import FileList, read_csv_list, scan_folder
from .layout import detect_layout
from .preprocess import Preprocess, channel_convert, resize_uint8
from .sizes import choose_size, probe_files


def load_data(cfg: DataConfig, seed: int = 0, preprocess: Preprocess | None = None,
              classes: list[str] | None = None, cache_dir: str | Path | None = None) -> DataBundle:
    """Load `cfg.data` (a built-in name, an image folder, or a CSV) into train/val/test splits.

    Args:
        cfg: the data section of the run config.
        seed: fixes the stratified train/val split.
        preprocess: a trained model's preprocessing, to load data exactly as it was seen in training.
        classes: a trained model's class names; the data's classes must be among them.
        cache_dir: where a folder's decoded-image cache goes (``data_cache`` disk); None: ~/.cache/daxiao/images.
    """
    if cfg.data in BUILTIN:
        return _load_builtin(cfg, seed, preprocess, classes)
    path = Path(cfg.data).expanduser()
    if not path.exists():
        hint = did_you_mean(cfg.data, BUILTIN)
        raise DaxiaoError(f"--data {cfg.data!r} is neither a built-in dataset ({', '.join(BUILTIN)}) nor an "
                          f"existing path.{hint}")
    return _load_files(cfg, path, seed, preprocess, classes, cache_dir)


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


def _file_list(path: Path, known: list[str] | None,
               skipped: list[tuple[Path, str]]) -> tuple[list[Path], list[int], list[str]]:
    """Files, labels and classes of a folder or CSV; with `known` (a model's classes) labels index those.

    A class the model does not know is an error, unless none of its files is readable (training left
    such a class out): then its files are skipped, each with its own reason."""
    if path.is_file():
        paths, labels, found = read_csv_list(path)
    else:
        paths, labels, found = scan_folder(path)
    if known is None:
        _check_classes(found, known, str(path))
        return paths, labels, found
    dead = set()
    for i in sorted({lab for lab in labels if found[lab] not in known}):
        problems = []
        for p in (p for p, lab in zip(paths, labels, strict=True) if lab == i):
            if (why := check_file(p)[0]) is None:
                break  # a readable image of a class the model does not know: refused below
            problems.append((p, why))
        else:  # every file of this class is unreadable: skipped, each with its own reason
            dead.add(i)
            skipped += problems
    if dead:
        keep = [k for k, lab in enumerate(labels) if lab not in dead]
        paths, labels = [paths[k] for k in keep], [labels[k] for k in keep]
    _check_classes([found[i] for i in sorted(set(labels))], known, str(path))
    return paths, [known.index(found[i]) for i in labels], known


def _workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))  # threads: Pillow decodes without the GIL


def _load_files(cfg: DataConfig, path: Path, seed: int, pre: Preprocess | None, known: list[str] | None,
                cache_dir: str | Path | None) -> DataBundle:
    """Layout -> file lists -> (header pass: sizes, channels) -> split -> one decoding pass -> splits.

    The train source's files are stored in split order (train part, then the val part drawn from it), so
    both splits are views of one decoded tensor, and the training part's pixel sums give mean/std."""
    layout = detect_layout(path, cfg.val)
    skipped: dict[str, list[tuple[Path, str]]] = {name: [] for name in ("train", "val", "test")}
    paths, labels, classes = _file_list(layout.train, known, skipped["train"])
    sources = {"train": (paths, labels)}
    for name, src in (("val", layout.val), ("test", layout.test)):
        if src is not None:
            sources[name] = _file_list(src, classes, skipped[name])[:2]
    dc.note(layout.describe(cfg.val_split, evaluating=known is not None))  # once the folders made sense

    fresh, grey, size, size_rule = pre is None, None, cfg.image_size, ""
    if fresh and (cfg.image_size is None or cfg.channels is None):  # the data chooses: read headers
        # Headers only: files they find unreadable are dropped by the decoding pass, as every bad file
        # is, so the split below never depends on whether this pass ran (evaluate and distill skip it).
        sizes, grey = [], True
        for name in [n for n in ("train", "val") if n in sources]:
            probe = probe_files(sources[name][0], f"scan {name}", _workers())
            sizes += probe.sizes if name == "train" else []
            grey = grey and probe.grey
        if cfg.image_size is None:
            size, size_rule = choose_size(sizes)
    parts = {"train": (0, len(sources["train"][0]))}
    if known is None:
        _classes_readable(sources["train"][1], classes, str(layout.train), 0)
    if "val" not in sources and known is None:  # draw val from train: seeded, stratified
        p, lab = sources["train"]
        tr, va = stratified_split(lab, cfg.val_split, seed)
        order = [*tr.tolist(), *va.tolist()]
        sources["train"] = ([p[i] for i in order], [lab[i] for i in order])
        parts = {"train": (0, len(tr)), "val": (len(tr), len(order))}
    if fresh:
        pre = Preprocess(size, cfg.channels or (1 if grey else 3), cfg.resize)
        size_rule = size_rule or f"--image-size {size}"
    # all-grey data bound for 3 channels is stored once and repeated as a view, as the built-in sets are
    dec = replace(pre, channels=1) if grey and pre.channels == 3 else pre
    decoded = _decode_all(cfg, sources, parts, dec, cache_dir)
    splits = _splits(sources, parts, decoded, classes, pre.channels, skipped)
    if not len(splits["train"]):
        raise DaxiaoError(f"{layout.train}: none of its images could be read (all corrupt or empty).")
    if known is None:
        splits, classes = _drop_empty_classes(splits, classes, str(layout.train), skipped)
        if "val" in splits and not len(splits["val"]):
            raise DaxiaoError(f"{layout.val or layout.train}: no readable validation images are left; add images, "
                              "or pass --val with a folder of them.")
    if fresh:  # the training part's exact pixel sums: the same mean/std whether decoded to memory, disk or not
        mean, std = stats_from_sums(decoded["train"].sums)
        if dec.channels != pre.channels:
            mean, std = mean * pre.channels, std * pre.channels
        pre = replace(pre, mean=mean, std=std)
    return DataBundle(splits["train"], splits.get("val", splits["train"]), splits.get("test"), classes, pre,
                      str(path), [f for v in skipped.values() for f in v], size_rule,
                      {k: v for k, v in skipped.items() if v})


def _classes_readable(labels: list[int], classes: list[str], where: str, skipped: int) -> None:
    present = set(labels)
    if not present:
        raise DaxiaoError(f"{where}: none of its images could be read (all corrupt or empty).")
    if empty := [c for i, c in enumerate(classes) if i not in present]:
        raise DaxiaoError(f"{where}: class folder(s) {', '.join(empty)} have no readable images"
                          f"{' after skipping ' + str(skipped) + ' bad files' if skipped else ''}; "
                          "add images or remove the folder.")


def _drop_empty_classes(splits: dict, classes: list[str], where: str, skipped: dict) -> tuple[dict, list[str]]:
    """A class folder left with no readable training image cannot be learned: it is left out with a warning
    (its bad files stay counted), not fatal; the other classes keep their order, and any val/test images of
    a left-out class are skipped with that reason."""
    present = set(splits["train"].targets.tolist())
    empty = [c for i, c in enumerate(classes) if i not in present]
    if not empty:
        return splits, classes
    keep = [c for c in classes if c not in empty]
    if len(keep) < 2:
        raise DaxiaoError(f"{where}: only one class ({', '.join(keep)}) has readable images; a classifier needs "
                          f"at least two (class(es) {', '.join(empty)} have none).")
    from ..console import console, escape

    console.print(f"[yellow]warning:[/] {escape(where)}: class folder(s) {escape(', '.join(empty))} have no "
                  "readable images; left out (add images to keep them).")
    remap = torch.tensor([keep.index(c) if c in keep else -1 for c in classes])
    out = {}
    for name, split in splits.items():
        new = remap[split.targets]
        rows = (new >= 0).nonzero().flatten().tolist()
        for i in (new < 0).nonzero().flatten().tolist():
            skipped[name].append((Path(split.names()[i]), "class left out (no readable training image)"))
        part = split.take(rows)
        if isinstance(part, TensorSplit):
            part = TensorSplit(part.images, new[rows], part.paths)
        else:
            part = FileSplit(FileList(part.files.paths, new[rows].tolist(), keep, part.files.grey))
        out[name] = part
    return out, keep


def _decode_all(cfg: DataConfig, sources: dict, parts: dict, dec: Preprocess,
                cache_dir: str | Path | None) -> dict[str, dc.Decoded]:
    """One pass over every source, into memory, a disk cache, or checked only (see `data.decoded`)."""
    folder = dc.default_dir(cache_dir)
    stats = {name: parts["train"][1] if name == "train" else 0 for name in sources}
    keyed = cfg.data_cache in ("auto", "disk")
    keys = {name: dc.cache_key(p, dec, stats[name]) for name, (p, _) in sources.items()} if keyed else {}
    need = sum(len(p) for p, _ in sources.values()) * dec.channels * dec.image_size ** 2
    cached = cfg.data_cache == "auto" and all(dc.find_cached(folder, k, dec) is not None for k in keys.values())
    mode, why = dc.choose_mode(cfg.data_cache, need, cfg.memory_budget, folder, cached)
    where = {"memory": "into memory", "disk": "into the disk cache", "off": "to check them, not kept"}[mode]
    dc.note(f"data cache: {mode} ({why})")
    out: dict[str, dc.Decoded] = {}
    t0, n = time.perf_counter(), 0
    for name, (p, _) in sources.items():
        phase = f"decode {name} ({where})"
        if mode == "memory":
            out[name] = dc.decode_memory(p, dec, stats[name], phase, _workers())
        elif mode == "disk":
            out[name] = dc.decode_disk(p, dec, stats[name], phase, _workers(), folder, keys[name])
        else:
            out[name] = dc.check_only(p, dec, stats[name], phase, _workers())
        n += 0 if out[name].reused else len(p)
    seconds = time.perf_counter() - t0
    total = sum(len(p) for p, _ in sources.values())
    if n:
        dc.note(f"decoded {n:,} images ({dec.channels}x{dec.image_size}x{dec.image_size}, "
                f"{dc.human_bytes(need)}) {where} in {seconds:.1f}s ({n / max(seconds, 1e-9):,.0f}/s)")
    if n < total:
        dc.note(f"reused the disk cache for {total - n:,} images ({folder})")
    return out


def _splits(sources: dict, parts: dict, decoded: dict[str, dc.Decoded], classes: list[str], channels: int,
            skipped: dict[str, list]) -> dict:
    """Each split as a view of its source's decoded rows (TensorSplit), or its checked files (FileSplit)."""
    out = {}
    for src, d in decoded.items():
        paths, labels = sources[src]
        cuts = parts if src == "train" else {src: (0, len(paths))}
        for i, why in sorted(d.bad.items()):
            skipped[next(k for k, (a, b) in cuts.items() if a <= i < b)].append((paths[i], why))
        for name, (a, b) in cuts.items():
            r0, r1 = d.rows(a, b)
            files, labs = [paths[i] for i in d.kept[r0:r1]], [labels[i] for i in d.kept[r0:r1]]
            if d.images is None:
                out[name] = FileSplit(FileList(files, labs, classes, grey=channels == 1))
            else:
                out[name] = TensorSplit(channel_convert(d.images[r0:r1], channels, view=True),
                                        torch.tensor(labs, dtype=torch.long), files)
    return out
