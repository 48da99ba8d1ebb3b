"""Figures written to files, drawn on `matplotlib.figure.Figure` objects.

No pyplot and no `matplotlib.use(...)`: nothing global changes, so a notebook user's backend stays as it
was, and matplotlib is imported only when a figure is drawn.

Class names in any script (the article is Chinese, and so are many readers' labels) are drawn with a
font fallback list: DejaVu Sans for Latin text, then a CJK font (Noto Sans CJK from Debian's
fonts-noto-cjk, or another installed one) for what DejaVu lacks. Without a CJK font such names show as
boxes, after one log line that says which package to install, instead of a warning per glyph.
"""

from __future__ import annotations

import functools
import glob
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CJK_NAMES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans SC",
             "Source Han Sans", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN")
CJK_FILES = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "/usr/share/fonts/**/*CJK*Regular*.tt[cf]",
             "/usr/share/fonts/**/*CJK*.otf", "/usr/share/fonts/**/wqy*.tt[cf]",
             "/usr/share/fonts/**/DroidSansFallback*")


@functools.cache
def cjk_font() -> str | None:
    """The family name of an installed font with CJK glyphs, or None. matplotlib's font list is cached
    across runs and may predate the font's installation, so known files are also added by path."""
    from matplotlib import font_manager as fm

    known = {f.name for f in fm.fontManager.ttflist}
    for name in CJK_NAMES:
        if name in known:
            return name
    for pattern in CJK_FILES:
        for path in sorted(glob.glob(pattern, recursive=True)):
            try:
                fm.fontManager.addfont(path)
                return fm.FontProperties(fname=path).get_name()
            except (OSError, RuntimeError, ValueError):
                continue
    return None


_warned: set[str] = set()


@contextmanager
def text_fonts(texts: Iterable[str] = ()) -> Iterator[None]:
    """Draw and save inside this: Latin text in DejaVu Sans, everything else in the CJK font when there is
    one. Without one, names outside Latin-1 get a single log line rather than one warning per glyph."""
    import matplotlib

    cjk = cjk_font()
    with matplotlib.rc_context({"font.family": ["DejaVu Sans", *([cjk] if cjk else [])]}), \
            warnings.catch_warnings():
        if cjk is None:
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
            if any(ord(ch) > 0x24F for t in texts for ch in t) and "cjk" not in _warned:
                from .console import console

                _warned.add("cjk")
                console.print("note: no CJK font is installed, so non-Latin class names show as boxes in plots; "
                              "install one (Debian: apt-get install fonts-noto-cjk).", markup=False)
        yield


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_confusion_matrix(labels, preds, classes: list[str], path: str | Path, title: str = "") -> np.ndarray:
    """Row-normalized confusion matrix with counts, as a PNG; returns the count matrix."""
    with text_fonts([*classes, title]):
        return _confusion_matrix(labels, preds, classes, path, title)


def _confusion_matrix(labels, preds, classes: list[str], path: str | Path, title: str) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(np.asarray(labels), np.asarray(preds), labels=list(range(len(classes))))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = min(4 + 0.45 * n, 24)
    fig = new_figure(size, size * 0.9)
    ax = fig.add_subplot()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return cm
