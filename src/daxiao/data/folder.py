"""Image folders and CSV lists: find the files, and serve them one by one to a DataLoader.

Which folder is which split is `data.layout`'s; the one up-front pass that checks and decodes every file
is `data.decoded`'s. A file that still fails later (changed on disk) is dropped from its batch, not fatal.
Nothing here imports torch: the torch-free runtime (daxiao.deploy) finds and lists files here too.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DaxiaoError
from .decode import BadImage, decode_file
from .preprocess import Preprocess

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if is_image(f))
        elif p.is_file():
            files.append(p)
        else:
            raise DaxiaoError(f"No such image or folder: {p}.")
    if not files:
        raise DaxiaoError(f"No images found in {', '.join(map(str, inputs))}.")
    return files


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


class ImageFiles:
    """Decodes and preprocesses one file per item -> (uint8 C,H,W tensor, label, index); None if it fails.
    Augmentation happens later, on whole batches (daxiao.augment), exactly as for in-memory sets.
    A map-style dataset by protocol (__len__, __getitem__), as DataLoader takes it: no torch base class,
    so that this module imports without torch."""

    def __init__(self, paths: list[Path], labels: list[int], preprocess: Preprocess):
        self.paths, self.labels, self.preprocess = paths, labels, preprocess

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
