"""Evaluate a trained model: accuracy, top-5, per-class precision/recall/F1, the confusion matrix as a
PNG, and predictions.csv listing every image so the mistakes can be looked at."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # noqa: E402

from .checkpoint import load_model  # noqa: E402
from .config import DataConfig  # noqa: E402
from .data import load_data, make_loader  # noqa: E402
from .trainer import evaluate, resolve_device  # noqa: E402


def save_confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, classes: list[str], path: str | Path,
                          title: str = "") -> np.ndarray:
    """Row-normalized confusion matrix with counts, as a PNG; returns the count matrix."""
    cm = confusion_matrix(labels.numpy(), preds.numpy(), labels=list(range(len(classes))))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
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
    plt.close(fig)
    return cm


def evaluate_model(weights: str | Path, data: str | None = None, split: str = "test", out_dir: str | Path | None = None,
                   batch_size: int = 256, data_dir: str | None = None, workers: int = 2) -> dict:
    """Evaluate a run folder or weights file on `data` (default: the data it was trained on).

    The training data (the default) is split exactly as in training and scored on `split` (test, else the
    held-out val); other data, a folder or CSV, is evaluated whole. Writes
    confusion_matrix.png and predictions.csv into `out_dir` when given.

    Returns:
        {"acc", "top5"?, "loss", "per_class": {class: {precision, recall, f1, support}}, "n", "data", "split"}.
    """
    model, meta = load_model(weights)
    from .data.preprocess import Preprocess

    pre = Preprocess(**meta["preprocess"])
    trained = meta.get("config", {})
    if data is None:  # the training data, split exactly as in training (same config, same seed)
        dcfg = DataConfig(**{**trained.get("data", {}), "workers": workers, "augment": "none"})
        if data_dir:
            dcfg.data_dir = data_dir
        data = dcfg.data
        bundle = load_data(dcfg, trained.get("train", {}).get("seed", 0), preprocess=pre)
    else:  # other data: every file is evaluation data (folders and CSVs), in the model's class order
        bundle = load_data(DataConfig(data=data, data_dir=data_dir, workers=workers), 0, preprocess=pre,
                           classes=meta["classes"])
    split = split if getattr(bundle, split, None) is not None else "val"
    part = bundle.split(split)
    device = resolve_device()
    model.to(device).to(memory_format=torch.channels_last)
    res = evaluate(model, make_loader(part, batch_size, pre, workers=workers), device=device, collect=True)
    labels, probs = res["labels"], res["probs"]
    preds = probs.argmax(1)
    classes = meta["classes"]
    p, r, f, s = precision_recall_fscore_support(labels.numpy(), preds.numpy(), labels=list(range(len(classes))),
                                                 zero_division=0)
    out = {"acc": res["acc"], "loss": res["loss"], "n": len(labels), "data": data, "split": split,
           "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                         for i, c in enumerate(classes)}}
    if "top5" in res:
        out["top5"] = res["top5"]
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_confusion_matrix(labels, preds, classes, out_dir / "confusion_matrix.png",
                              title=f"{meta['model']} on {Path(str(data)).name} ({split}) - acc {res['acc']:.4f}")
        names = part.names()
        with open(out_dir / "predictions.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["item", "true", "predicted", "probability", "correct"])
            for i in range(len(labels)):
                w.writerow([names[i], classes[labels[i]], classes[preds[i]], f"{probs[i, preds[i]]:.4f}",
                            int(labels[i] == preds[i])])
        out["files"] = [str(out_dir / "confusion_matrix.png"), str(out_dir / "predictions.csv")]
    return out
