"""Evaluate a trained model: accuracy, top-5, per-class precision/recall/F1, the confusion matrix as a
PNG, and predictions.csv listing every image so the mistakes can be looked at."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import torch
from sklearn.metrics import precision_recall_fscore_support

from ..allocator import reuse_memory
from ..config import DataConfig
from ..data import load_data, make_loader
from ..errors import DaxiaoError
from ..files import atomic_write, csv_safe
from ..models.saved import load_run
from ..plots import save_confusion_matrix
from ..training.loop import evaluate
from ..training.precision import resolve_device

__all__ = ["csv_safe", "evaluate_model"]


def evaluate_model(weights: str | Path, data: str | None = None, split: str = "test", out_dir: str | Path | None = None,
                   batch_size: int = 256, data_dir: str | None = None, workers: int = 2) -> dict:
    """Evaluate a run folder or weights file on `data` (default: the data it was trained on).

    The training data (the default) is split exactly as in training and scored on `split` (test, else the
    held-out val); other data, a folder or CSV, is evaluated whole. Writes
    confusion_matrix.png and predictions.csv into `out_dir` when given.

    Returns:
        {"acc", "top5"?, "loss", "per_class": {class: {precision, recall, f1, support}}, "n", "data", "split"}.
    """
    reuse_memory()  # evaluation batches of 256: see daxiao.allocator
    run = load_run(weights)
    model, pre, classes = run.model, run.preprocess, run.classes
    if data is None:  # the training data, split exactly as in training (same config, same seed)
        if run.config is None:
            raise DaxiaoError(f"{run.path} does not record the data it was trained on; pass --data.")
        dcfg = replace(run.config.data, workers=workers, augment="none", data_dir=data_dir or run.config.data.data_dir)
        data = dcfg.data
        bundle = load_data(dcfg, run.config.train.seed, preprocess=pre)
    else:  # other data: every file is evaluation data (folders and CSVs), in the model's class order
        bundle = load_data(DataConfig(data=data, data_dir=data_dir, workers=workers), 0, preprocess=pre,
                           classes=classes)
    split = split if getattr(bundle, split, None) is not None else "val"
    part = bundle.split(split)
    device = resolve_device()
    model.to(device).to(memory_format=torch.channels_last)
    tta = run.config.train.tta if run.config is not None else "none"  # the views the run was validated with
    res = evaluate(model, make_loader(part, batch_size, pre, workers=workers), device=device, collect=True, tta=tta)
    labels, probs = res["labels"], res["probs"]
    preds = probs.argmax(1)
    p, r, f, s = precision_recall_fscore_support(labels.numpy(), preds.numpy(), labels=list(range(len(classes))),
                                                 zero_division=0)
    out = {"acc": res["acc"], "loss": res["loss"], "n": len(labels), "data": data, "split": split,
           "unscored": len(part) - len(labels) + len(bundle.dropped.get(split, [])),
           "skipped": [[str(p), why] for p, why in bundle.skipped],
           "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                         for i, c in enumerate(classes)}}
    if "top5" in res:
        out["top5"] = res["top5"]
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_confusion_matrix(labels, preds, classes, out_dir / "confusion_matrix.png",
                              title=f"{run.name} on {Path(str(data)).name} ({split}) - acc {res['acc']:.4f}")
        names = part.names()  # rows keyed by the sample's own index: a file dropped mid-run cannot shift them
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["item", "true", "predicted", "probability", "correct"])
        seen = res["index"].tolist()
        for i, j in enumerate(seen):
            w.writerow([csv_safe(names[j]), csv_safe(classes[labels[i]]), csv_safe(classes[preds[i]]),
                        f"{probs[i, preds[i]]:.4f}", int(labels[i] == preds[i])])
        # files not scored are listed too, never silently missing: failed now, or unreadable at the check
        targets = part.targets.tolist()
        for j in sorted(set(range(len(part))) - set(seen)):
            w.writerow([csv_safe(names[j]), csv_safe(classes[targets[j]]), "(failed to decode)", "", ""])
        for f, why in bundle.dropped.get(split, []):
            w.writerow([csv_safe(str(f)), "", f"(unreadable: {why})", "", ""])
        atomic_write(out_dir / "predictions.csv", buf.getvalue())
        out["files"] = [str(out_dir / "confusion_matrix.png"), str(out_dir / "predictions.csv")]
    return out

