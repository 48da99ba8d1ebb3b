"""Which folder is which split: the layouts public image sets come in, recognised and said in one line.

    ROOT/train/<class>/ + ROOT/val|valid|validation/<class>/ (+ ROOT/test/<class>/)   splits as given
    ROOT/train/<class>/ + ROOT/test/<class>/                  val drawn from train (seeded, stratified);
                                                              test kept: `evaluate` scores it by default
    ROOT/train/<class>/                                       val drawn from train
    ROOT/<class>/                                             val drawn from the classes' images
    list.csv (path,label rows)                                val drawn from the list

A root whose folders mix split names with other names (train/, cats/, dogs/) has two readings (splits,
or classes one of which is called "train"), and guessing wrong trains a silently wrong model (a
"train" vs "test" classifier), so it is refused with both readings named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DaxiaoError

VAL_NAMES = ("val", "valid", "validation")
SPLIT_NAMES = ("train", *VAL_NAMES, "test")


@dataclass
class Layout:
    kind: str            # "splits" (train + val [+ test]) | "train-test" | "train" | "classes" | "csv"
    root: Path
    train: Path          # a folder of class folders, or a CSV list
    val: Path | None     # given validation data (the layout's val/ or --val), else drawn from train
    test: Path | None
    val_given: bool = False  # val came from --val rather than the layout

    def describe(self, val_split: float, evaluating: bool = False) -> str:
        """The one line a run prints: what was read as which split."""
        def rel(p: Path) -> str:
            return f"{p.name}/" if p.parent == self.root and p.is_dir() else str(p)

        parts = {"splits": [rel(self.train), *(rel(p) for p in (self.val, self.test) if p)],
                 "train-test": [rel(self.train), rel(self.test)] if self.test else [rel(self.train)],
                 "train": [rel(self.train)], "classes": ["class folders"], "csv": [f"CSV list {self.train.name}"]}
        text = " + ".join(parts[self.kind])
        if self.val_given:
            text += f" + --val {self.val}"
        if self.val is None:
            if evaluating:
                text += " -> every image scored (no split drawn)"
            else:
                whole = "train" if self.kind in ("train-test", "train") else "the images"
                text += f" -> val = {100 * val_split:g} % of {whole}, stratified"
        if self.test is not None and self.kind == "train-test" and not evaluating:
            text += f"; test = {rel(self.test)}"
        return f"layout: {text}"


def _dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def detect_layout(path: Path, val: str | None = None) -> Layout:
    """The layout of `path` (a folder or a CSV list), with `val` (--val) as given validation data."""
    if not path.exists():
        raise DaxiaoError(f"No such folder: {path}. Pass --data DIR with one sub-folder per class.")
    given_val = Path(val).expanduser() if val else None
    if given_val is not None and not given_val.exists():
        raise DaxiaoError(f"No such validation path: {given_val}.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DaxiaoError(f"{path} is a file; --data takes a folder of class sub-folders or a .csv list.")
        return Layout("csv", path.parent, path, given_val, None, given_val is not None)
    dirs = _dirs(path)
    splits = {d.name.lower(): d for d in dirs if d.name.lower() in SPLIT_NAMES}
    others = [d.name for d in dirs if d.name.lower() not in SPLIT_NAMES]
    if splits and others:
        named = ", ".join(f"{d.name}/" for d in splits.values())
        rest = ", ".join(f"{n}/" for n in others[:4]) + (", ..." if len(others) > 4 else "")
        raise DaxiaoError(
            f"{path} mixes split folders ({named}) with other folders ({rest}): read as splits, {rest} would be "
            f"ignored; read as classes, {named} would be classes. Move the class folders into train/ "
            f"(splits) or rename {named} (classes), or pass --data {path}/<folder> directly.")
    if not splits:
        return Layout("classes", path, path, given_val, None, given_val is not None)
    if "train" not in splits:
        raise DaxiaoError(f"{path} has {', '.join(f'{d.name}/' for d in splits.values())} but no train/ folder; "
                          f"add train/<class>/ folders, or pass --data {next(iter(splits.values()))} to use "
                          "that folder's classes directly.")
    found_val = next((splits[n] for n in VAL_NAMES if n in splits), None)
    test = splits.get("test")
    if given_val is not None:  # --val wins over the layout's own val/
        found_val = given_val
    kind = "splits" if found_val is not None and given_val is None else ("train-test" if test else "train")
    return Layout(kind, path, splits["train"], found_val, test, given_val is not None)
