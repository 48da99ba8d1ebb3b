"""Figures written to files, drawn on `matplotlib.figure.Figure` objects.

No pyplot and no `matplotlib.use(...)`: nothing global changes, so a notebook user's backend stays as it
was, and matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_confusion_matrix(labels, preds, classes: list[str], path: str | Path, title: str = "") -> np.ndarray:
    """Row-normalized confusion matrix with counts, as a PNG; returns the count matrix."""
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
