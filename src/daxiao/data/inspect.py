"""`daxiao datasets --inspect PATH`: what daxiao sees in a folder or CSV before anything trains: the
layout, the classes and their counts per split, image sizes and modes, the files it cannot read, and the
size and channels training would choose."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..console import progress
from .decode import GREY_MODES, check_file
from .folder import read_csv_list, scan_folder
from .layout import detect_layout
from .sizes import choose_size, describe_sizes, probe_files


def _files(src: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    paths, labels, found = read_csv_list(src) if src.is_file() else scan_folder(src)
    if classes is None:
        return paths, labels, found
    index = {c: i for i, c in enumerate(classes)}
    for c in found:  # classes only a val/test folder has are appended, so nothing is hidden
        index.setdefault(c, len(index))
    return paths, [index[found[i]] for i in labels], list(index)


def inspect_data(path: str | Path, val: str | None = None, val_split: float = 0.1, workers: int = 4) -> dict:
    """Layout, per-split class counts (readable files), sizes, modes and unreadable files of `path`.
    Every file is decoded once (the header alone misses truncated files)."""
    path = Path(path).expanduser()
    layout = detect_layout(path, val)
    sources = {"train": layout.train, "val": layout.val, "test": layout.test}
    classes: list[str] | None = None
    splits: dict[str, dict] = {}
    unreadable: list[tuple[str, str]] = []
    sizes_all: list[tuple[int, int]] = []
    modes: Counter = Counter()
    for name, src in sources.items():
        if src is None:
            continue
        paths, labels, classes = _files(src, classes)
        probe = probe_files(paths, f"scan {name}", workers)
        with progress(f"check {name}", len(paths), "images") as bar, ThreadPoolExecutor(workers) as pool:
            checked = []
            for r in pool.map(check_file, paths):
                checked.append(r)
                bar.advance()
        bad = {i: why for i, (why, _) in enumerate(checked) if why is not None}
        unreadable += [(str(paths[i]), why) for i, why in sorted(bad.items())]
        good = [i for i in range(len(paths)) if i not in bad]
        counts = Counter(labels[i] for i in good)
        sizes = [(w, h) for i, info in enumerate(probe.info) if info and i not in bad for w, h in [info[:2]]]
        sizes_all += sizes if name == "train" else []
        modes.update(probe.info[i][2] for i in good if probe.info[i])
        splits[name] = {"source": str(src), "images": len(good), "unreadable": len(bad),
                        "counts": dict(counts), "sizes": describe_sizes(sizes)}
    classes = classes or []
    for s in splits.values():
        s["counts"] = {classes[i]: s["counts"].get(i, 0) for i in range(len(classes))}
    size, rule = choose_size(sizes_all)
    grey = all(m in GREY_MODES for m in modes)
    return {"path": str(path), "layout": layout.describe(val_split), "classes": classes, "splits": splits,
            "modes": dict(modes), "unreadable": unreadable, "image_size": size, "size_rule": rule,
            "channels": 1 if grey else 3}
