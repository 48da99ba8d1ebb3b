"""Predict classes of image files with a trained model, preprocessing them exactly as in training."""

from __future__ import annotations

from pathlib import Path

import torch

from ..allocator import reuse_memory
from ..data.decode import BadImage, decode_file
from ..data.folder import collect_images
from ..models.saved import load_run

__all__ = ["collect_images", "predict"]


@torch.no_grad()
def predict(weights: str | Path, images: list[str | Path], top_k: int = 5, batch_size: int = 64) -> list[dict]:
    """Top-k classes for each image.

    Returns:
        One dict per file: {"file", "top": [{"class", "probability"}, ...]} or {"file", "error"} for a
        file that cannot be read (it is reported, not fatal).

    Example:
        >>> predict("runs/seed-cnn-digits", ["my_digit.png"], top_k=3)
    """
    reuse_memory()  # see daxiao.allocator
    run = load_run(weights)
    model, pre, classes = run.model, run.preprocess, run.classes
    k = min(top_k, len(classes))
    results: list[dict] = []
    batch: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        x = pre.normalize(torch.stack([t for _, t in batch])).contiguous(memory_format=torch.channels_last)
        probs = model(x.to(next(model.parameters()).device)).float().softmax(1).cpu()
        top = probs.topk(k, 1)
        for (i, _), pv, iv in zip(batch, top.values, top.indices, strict=True):
            pairs = zip(pv.tolist(), iv.tolist(), strict=True)
            results[i]["top"] = [{"class": classes[c], "probability": round(p, 6)} for p, c in pairs]
        batch.clear()

    for f in collect_images(images):
        results.append({"file": str(f)})
        try:
            batch.append((len(results) - 1, decode_file(f, pre)))
        except BadImage as e:  # reported per file, not fatal
            results[-1]["error"] = f"bad image: {e}"
        if len(batch) >= batch_size:
            flush()
    flush()
    return results
