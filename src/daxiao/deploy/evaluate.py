"""`daxiao evaluate BUNDLE`: the bundle's accuracy and per-class metrics, the report `evaluate_model`
writes for a run (predictions.csv, confusion matrix where matplotlib is installed), without torch for
image folders and CSV lists. The training data's own split (the default) is rebuilt by
`daxiao.data.load_data`, which needs torch; without it, pass --data."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..errors import DaxiaoError
from ..files import atomic_write, csv_safe
from .runtime import Engine, evaluate_files, scores


def training_split(engine: Engine, split: str, data_dir: str | None, workers: int) -> tuple[dict, str]:
    """The split `split` of the data the bundle was trained on, exactly as training split it."""
    cfg = (engine.bundle.meta.get("config") if engine.bundle else None) or None
    if cfg is None:
        raise DaxiaoError(f"{engine.path} does not record the data it was trained on; pass --data FOLDER_OR_CSV.")
    try:
        from ..config import RunConfig
        from ..data.load import load_data
    except ImportError:
        raise DaxiaoError(f"Rebuilding the training split of {cfg['data']['data']!r} needs torch (the training "
                          "install); pass --data FOLDER_OR_CSV to evaluate without torch.") from None
    from dataclasses import replace

    rc = RunConfig.from_dict(cfg)
    dcfg = replace(rc.data, workers=workers, augment="none", data_dir=data_dir or rc.data.data_dir)
    bundle = load_data(dcfg, rc.train.seed, preprocess=engine.preprocess, classes=engine.classes)
    split = split if getattr(bundle, split, None) is not None else "val"
    part = bundle.split(split)
    if hasattr(part, "images"):  # in memory: already at the model's size
        images, y = part.images.numpy(), part.labels.numpy()
        probs = np.concatenate([_probs(engine, images[i:i + 256]) for i in range(0, len(images), 256)])
        return {**scores(y, probs, engine.classes), "labels": y, "probs": probs, "names": part.names(),
                "skipped": 0}, split
    from ..data.decode import BadImage, decode_array

    keep, arrays = [], []
    for i, p in enumerate(part.files.paths):
        try:
            arrays.append(decode_array(p, engine.preprocess))
            keep.append(i)
        except BadImage:
            pass
    y = np.array([part.files.labels[i] for i in keep])
    probs = np.concatenate([_probs(engine, np.stack(arrays[i:i + 64])) for i in range(0, len(arrays), 64)])
    return {**scores(y, probs, engine.classes), "labels": y, "probs": probs,
            "names": [str(part.files.paths[i]) for i in keep], "skipped": len(part) - len(keep)}, split


def _probs(engine: Engine, uint8: np.ndarray) -> np.ndarray:
    from .runtime import softmax

    return softmax(engine.logits(engine.preprocess.normalize_array(uint8)))


def evaluate_engine(engine: Engine, data: str | None = None, split: str = "test", out_dir: str | Path | None = None,
                    batch_size: int = 64, data_dir: str | None = None, workers: int = 2) -> dict:
    """The `evaluate_model` report for an exported model. Returns acc, loss, top5?, per_class, n, data, split."""
    if data is None:
        r, split = training_split(engine, split, data_dir, workers)
        data = engine.bundle.meta["config"]["data"]["data"]
    else:
        r = evaluate_files(engine, data, split, batch_size, workers)
        split = r["split"]
    labels, probs, names = r.pop("labels"), r.pop("probs"), r.pop("names")
    out = {**r, "data": str(data), "split": split, "model": engine.name, "kind": engine.kind, "variant": engine.variant}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        preds = probs.argmax(1)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["item", "true", "predicted", "probability", "correct"])
        for i, name in enumerate(names):
            w.writerow([csv_safe(name), csv_safe(engine.classes[labels[i]]), csv_safe(engine.classes[preds[i]]),
                        f"{probs[i, preds[i]]:.4f}", int(labels[i] == preds[i])])
        atomic_write(out_dir / "predictions.csv", buf.getvalue())
        out["files"] = [str(out_dir / "predictions.csv")]
        try:
            from ..plots import save_confusion_matrix

            save_confusion_matrix(labels, preds, engine.classes, out_dir / "confusion_matrix.png",
                                  title=f"{engine.name} ({engine.kind} {engine.variant}) on {Path(str(data)).name} "
                                        f"({split}) - acc {out['acc']:.4f}")
            out["files"].insert(0, str(out_dir / "confusion_matrix.png"))
        except ImportError:  # matplotlib/scikit-learn are not part of the minimal deployment install
            pass
    return out
