"""`daxiao embed`: pooled backbone features of a data set, for use outside daxiao (search, clustering,
a scikit-learn model on top)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import DataConfig
from ..data import load_data
from ..data.preprocess import Preprocess
from ..errors import DaxiaoError
from ..files import atomic_write, atomic_write_json
from ..models import create_model
from ..models.head import TransferModel
from ..models.pretrained import weights_input_size
from ..models.saved import load_run
from ..training.features import extract_features
from ..training.precision import resolve_device


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logit features of any zoo model (for a TransferModel: its backbone's, before the head)."""
    if isinstance(model, TransferModel):
        return model.features(x)
    return model.forward_head(model.forward_features(x), pre_logits=True)


def embed(source: str, data: str | None, out: str | Path, split: str = "all", image_size: int | None = None,
          data_dir: str | None = None, batch_size: int = 256, workers: int = 2, verbose: bool = True) -> dict:
    """Write pooled features of `data` as ``OUT.npy`` (float32, N x F), labels as ``OUT.labels.npy``
    (int64) and ``OUT.json`` (classes, item names, the rows of each split, model and preprocessing).

    Args:
        source: a run folder or daxiao weights file (its preprocessing is used), or a model name, which
            is built with its pretrained ImageNet weights at their input size (or `image_size`), RGB.
        data: built-in name, folder or CSV; None for a run means the data it was trained on.
        split: train, val, test or all (rows in that order).

    Example:
        >>> embed("efficientnet-lite0", "digits", "digits.npy", image_size=64)
    """
    out = Path(out)
    if out.suffix != ".npy":
        raise DaxiaoError(f"--out must end in .npy (received {out.name}); labels and names are written beside it.")
    model, pre, data = _embed_model(source, data, image_size)
    if data is None:
        raise DaxiaoError(f"{source} is a model name: say which images to embed with --data.")
    bundle = load_data(DataConfig(data=data, data_dir=data_dir, workers=workers), 0, preprocess=pre)
    names = ("train", "val", "test") if split == "all" else (split,)
    names = tuple(n for n in names if getattr(bundle, n) is not None)
    model.to(resolve_device()).to(memory_format=torch.channels_last).eval()
    feats, labels, items, rows = [], [], [], {}
    extractor = _Extractor(model)
    for name in names:
        part = bundle.split(name)
        f = extract_features(extractor, part, pre, batch_size, workers, desc=f"{name} features", verbose=verbose)
        rows[name] = [sum(len(x) for x in feats), sum(len(x) for x in feats) + len(f)]
        feats.append(f)
        labels.append(part.targets)
        items += [f"{name}/{n}" for n in part.names()]
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.cat(feats).numpy().astype(np.float32)
    atomic_write(out, _npy(x))
    atomic_write(out.with_suffix(".labels.npy"), _npy(torch.cat(labels).numpy().astype(np.int64)))
    meta = {"source": str(source), "data": data, "rows": rows, "classes": bundle.classes, "items": items,
            "shape": list(x.shape), "preprocess": pre.to_dict(),
            "skipped": [[str(p), why] for p, why in bundle.skipped]}
    atomic_write_json(out.with_suffix(".json"), meta, indent=None)
    return {"features": str(out), "labels": str(out.with_suffix(".labels.npy")), "json": str(out.with_suffix(".json")),
            "shape": list(x.shape), "rows": rows, "skipped": bundle.skipped}


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


class _Extractor(nn.Module):
    """Gives any zoo model the `features` method that `extract_features` calls."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_features = model.num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.model, x)


def _embed_model(source: str, data: str | None, image_size: int | None) -> tuple[nn.Module, Preprocess, str | None]:
    if Path(source).exists():
        run = load_run(source)
        return run.model, run.preprocess, data or run.data
    size = image_size or weights_input_size(source)
    model = create_model(source, pretrained=True, num_classes=0, in_chans=3, input_size=size)
    cfg = model.pretrained_cfg
    pre = Preprocess(size, 3, "squash", cfg.get("mean") or (0.5,) * 3, cfg.get("std") or (0.5,) * 3)
    return model, pre, data
