"""Image folders and CSV lists: find the files, check each one decodes, and serve them to a DataLoader.

Unreadable files (zero bytes, truncated, not an image) are found once, up front, in a thread pool
(Pillow releases the GIL while decoding), so training never meets them mid-epoch; they are counted and
reported. A file that still fails later (changed on disk) is dropped from its batch, not fatal.
"""

from __future__ import annotations

import csv
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DaxiaoError
from .decode import BadImage, check_file, decode_file
from .preprocess import Preprocess

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VAL_NAMES = ("val", "valid", "validation")


@dataclass
class FileList:
    """Checked image files with integer labels into `classes`."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]
    grey: bool = True  # every readable image was greyscale
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def is_image(p: Path) -> bool:
    """An image file by its extension (any case); a broken or looping link with one is listed too, so it is
    skipped and counted with its reason rather than silently left out."""
    return p.suffix.lower() in IMAGE_EXTS and (p.is_file() or p.is_symlink())


def split_root(root: Path) -> dict[str, Path] | None:
    """{'train': ..., 'val': ..., 'test': ...} if `root` holds train/ and val/ (or valid/, validation/)."""
    if not (root / "train").is_dir():
        return None
    val = next((root / n for n in VAL_NAMES if (root / n).is_dir()), None)
    if val is None:
        return None
    found = {"train": root / "train", "val": val}
    if (root / "test").is_dir():
        found["test"] = root / "test"
    return found


def scan_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """One sub-folder per class, searched recursively; class order is sorted names (as torchvision)."""
    if not root.exists():
        raise DaxiaoError(f"No such folder: {root}. Pass --data DIR with one sub-folder per class.")
    if not root.is_dir():
        raise DaxiaoError(f"{root} is a file, not a folder; pass a folder of class sub-folders or a .csv list.")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DaxiaoError(f"{root} has no class sub-folders; put each class's images in {root}/<class>/.")
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*") if is_image(p))
        paths += files
        labels += [i] * len(files)
    if not paths:
        raise DaxiaoError(f"{root} has no images ({', '.join(sorted(IMAGE_EXTS))}) in its class folders.")
    return paths, labels, classes


def read_csv_list(path: Path) -> tuple[list[Path], list[int], list[str]]:
    """A CSV of `path,label` rows (header optional); relative paths are relative to the CSV's folder."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 2 or not row[0].strip():
                continue
            rows.append((row[0].strip(), row[1].strip()))
    if rows and rows[0][0].lower() in ("path", "file", "filename", "image") and rows[0][1].lower() in (
            "label", "class", "target"):
        rows = rows[1:]
    if not rows:
        raise DaxiaoError(f"{path} lists no images; expected rows of `path,label`.")
    classes = sorted({label for _, label in rows})
    index = {c: i for i, c in enumerate(classes)}
    paths = [p if (p := Path(f)).is_absolute() else path.parent / p for f, _ in rows]
    return paths, [index[label] for _, label in rows], classes


def check_files(paths: list[Path], labels: list[int], classes: list[str], where: str,
                workers: int = 8) -> FileList:
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(check_file, paths))
    good = [i for i, (problem, _) in enumerate(results) if problem is None]
    skipped = [(paths[i], results[i][0]) for i in range(len(paths)) if results[i][0] is not None]
    fl = FileList([paths[i] for i in good], [labels[i] for i in good], classes,
                  grey=all(results[i][1] for i in good), skipped=skipped)
    if not fl.paths:
        raise DaxiaoError(f"{where}: none of the {len(paths)} images could be read (all corrupt or empty).")
    return fl


def drop_empty_classes(fl: FileList, where: str) -> FileList:
    """Training data: a class folder left with no readable image cannot be learned, so it is left out with a
    warning (its bad files stay counted in `skipped`), not fatal; the other classes keep their order."""
    counts = Counter(fl.labels)
    empty = [c for i, c in enumerate(fl.classes) if counts[i] == 0]
    if not empty:
        return fl
    from ..console import console, escape

    console.print(f"[yellow]warning:[/] {escape(where)}: class folder(s) {escape(', '.join(empty))} have no readable "
                  "images; left out (add images to keep them).")
    keep = [c for c in fl.classes if c not in empty]
    remap = {fl.classes.index(c): i for i, c in enumerate(keep)}
    return FileList(fl.paths, [remap[label] for label in fl.labels], keep, fl.grey, fl.skipped)


class ImageFiles(torch.utils.data.Dataset):
    """Decodes and preprocesses one file per item -> (uint8 C,H,W tensor, label, index); None if it fails.
    Augmentation happens later, on whole batches (daxiao.augment), exactly as for in-memory sets."""

    def __init__(self, paths: list[Path], labels: list[int], preprocess: Preprocess):
        self.paths, self.labels, self.preprocess = paths, labels, preprocess
        self.targets = torch.tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            x = decode_file(self.paths[i], self.preprocess)
        except BadImage:  # changed on disk since the check: drop it from the batch, don't end the epoch
            return None
        return x, self.labels[i], i



def reason_counts(skipped: list[tuple[Path, str]]) -> dict[str, int]:
    """{kind of problem: files}, the kind being a reason without its details ("too large", "truncated")."""
    return dict(Counter(why.split(" (")[0] for _, why in skipped).most_common())


def skipped_summary(skipped: list[tuple[Path, str]]) -> str:
    """'skipped 5 unreadable image file(s): 2 truncated, 3 not an image; e.g. a.jpg (truncated ...)'."""
    kinds = ", ".join(f"{n} {k}" for k, n in reason_counts(skipped).items())
    path, why = skipped[0]
    return f"skipped {len(skipped)} unreadable image file(s): {kinds}; e.g. {path} ({why})"
