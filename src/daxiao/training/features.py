"""The feature cache: a frozen backbone's pooled features, computed once and trained on many times.

With the base frozen and no augmentation every epoch shows the base the same pixels, so its features
are computed once (`feature_bundle`) and the head trains on `FeatureSplit`s through the same `fit`. The
key covers everything that changes the features; the store is in memory (an LRU) or on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..allocator import reuse_memory
from ..config import RunConfig
from ..config.augment import parse_augment
from ..console import console, progress
from ..data import DataBundle, FeatureSplit, Split, TensorSplit, make_loader
from ..data.preprocess import Preprocess
from ..errors import DaxiaoError
from ..files import atomic_write, writable_dir
from ..models.head import HEAD_ARGS, TransferModel
from .distributed import device_for_rank
from .precision import autocast, choose_bf16
from .session import match_model_to_data

_MEMORY: OrderedDict[str, torch.Tensor] = OrderedDict()  # key -> features, most recent last
MEMORY_ENTRIES = 16  # a few data sets x splits: features are small (N x 1280 floats)


def cache_key(model: TransferModel, split: Split, pre: Preprocess, bf16: bool) -> str:
    """Changes whenever the features would: the images (content, or file paths, sizes and times), the
    backbone (name, arguments, every weight and BatchNorm statistic), the preprocessing and the precision."""
    h = hashlib.blake2b(digest_size=16)
    desc = {"model": getattr(model, "daxiao_name", type(model.backbone).__name__), "bf16": bf16,
            "args": {k: v for k, v in getattr(model, "daxiao_args", {}).items() if k not in HEAD_ARGS},
            "preprocess": pre.to_dict(), "format": 1}
    h.update(json.dumps(desc, sort_keys=True, default=str).encode())
    for t in model.backbone.state_dict().values():
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    if isinstance(split, TensorSplit):
        images = split.images
        if images.ndim == 4 and images.shape[1] == 3 and images.stride(1) == 0:  # grey expanded as a view
            images = images[:, :1]
        h.update(images.contiguous().numpy())
    else:
        for p in split.files.paths:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@torch.no_grad()
def extract_features(model: TransferModel, split: Split, pre: Preprocess, batch_size: int = 256, workers: int = 2,
                     bf16: bool = False, desc: str = "features", verbose: bool = True) -> torch.Tensor:
    """Pooled backbone features of every image in `split`, in order, as float32 (N, num_features)."""
    reuse_memory()  # batch-256 activations: reused, not re-faulted every batch (daxiao.allocator)
    device = next(model.parameters()).device
    model.eval()
    loader = make_loader(split, batch_size, pre, workers=workers)
    out = []
    with progress(desc, len(split), "images", enabled=verbose) as bar:
        for batch in loader:
            with autocast(device, bf16):
                out.append(model.features(batch.to(device).inputs).float().cpu())
            bar.advance(len(batch))
    feats = torch.cat(out) if out else torch.empty(0, model.num_features)
    if len(feats) != len(split):
        raise DaxiaoError(f"{desc}: {len(split) - len(feats)} images could not be read while computing features.")
    return feats


def cached_features(model: TransferModel, split: Split, pre: Preprocess, cache: str = "memory",
                    cache_dir: str | Path | None = None, bf16: bool = False, batch_size: int = 256, workers: int = 2,
                    desc: str = "features", verbose: bool = True) -> torch.Tensor:
    """`extract_features`, computed once per key and kept in memory or in `cache_dir` (safetensors)."""
    folder = writable_cache_dir(cache_dir) if cache == "disk" else None  # checked first: fail before any work
    key = cache_key(model, split, pre, bf16)
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        return _MEMORY[key]
    path = None
    if folder is not None:
        path = folder / f"{key}.safetensors"
        if path.is_file():
            feats = read_cached(path, len(split), model.num_features)
            if feats is not None:
                return _remember(key, feats)
    feats = extract_features(model, split, pre, batch_size, workers, bf16, desc, verbose)
    if path is not None:
        try:
            atomic_write(path, save({"features": feats}, metadata={"daxiao": json.dumps({"n": len(feats)})}))
        except OSError as e:  # a read-only mount, a full disk
            raise DaxiaoError(f"Cannot write to the feature cache {path.parent} ({e.strerror}); pass --cache-dir "
                              "DIR somewhere writable, or --feature-cache memory.") from None
    return _remember(key, feats)


def read_cached(path: Path, n: int, width: int) -> torch.Tensor | None:
    """The features in a cache file, or None (with a warning) if it is damaged or of the wrong shape: it is
    then recomputed and replaced, never a crash in every later run."""
    try:
        feats = load_file(str(path))["features"]
        if tuple(feats.shape) == (n, width) and feats.dtype == torch.float32 and torch.isfinite(feats).all():
            return feats
        why = f"holds {tuple(feats.shape)} {feats.dtype}, not ({n}, {width}) finite float32"
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        why = f"{type(e).__name__}: {str(e)[:80]}"
    console.print(f"[yellow]warning:[/] feature cache file {path} is damaged ({why}); computing the features again.")
    return None


def writable_cache_dir(cache_dir: str | Path | None) -> Path:
    folder = Path(cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "daxiao" / "features")
    return writable_dir(folder, "feature cache", "--feature-cache memory")


def clear_memory_cache() -> None:
    """Forget the features kept in memory (benchmarks time each run cold)."""
    _MEMORY.clear()


def _remember(key: str, feats: torch.Tensor) -> torch.Tensor:
    _MEMORY[key] = feats
    while len(_MEMORY) > MEMORY_ENTRIES:
        _MEMORY.popitem(last=False)
    return feats


def feature_bundle(model: TransferModel, bundle: DataBundle, cfg: RunConfig, verbose: bool = True) -> DataBundle:
    """`bundle` with its train and val images replaced by the frozen base's features (the test split is
    left out: training never reads it). The preprocessing stays the images' own, saved with the model."""
    t = cfg.train
    bundle = match_model_to_data(model, bundle)  # the weights' normalization, as fit will train the head with
    model.to(device_for_rank(t.device)).to(memory_format=torch.channels_last)
    bf16 = extraction_bf16(t.precision, model, bundle, cfg.data.workers)
    t0 = time.perf_counter()

    def feats(name: str) -> FeatureSplit:
        split = bundle.split(name)
        f = cached_features(model, split, bundle.preprocess, t.feature_cache, t.cache_dir, bf16,
                            max(256, t.batch_size), cfg.data.workers, f"{name} features", verbose)
        return FeatureSplit(f, split.targets)

    out = DataBundle(feats("train"), feats("val"), None, bundle.classes, bundle.preprocess,
                     f"{bundle.source} (cached {model.num_features}-d features)", bundle.skipped,
                     bundle.size_rule, bundle.dropped)
    if verbose:
        console.print(f"features of {len(out.train) + len(out.val)} images ready in {time.perf_counter() - t0:.1f}s")
    return out


def extraction_bf16(precision: str, model: TransferModel, bundle: DataBundle, workers: int) -> bool:
    """bf16 or fp32 for extraction, by the rule training uses (`choose_bf16`), timed on a forward pass."""
    device = next(model.parameters()).device
    held: dict = {}

    @torch.no_grad()
    def forward_pass(bf16: bool) -> None:
        if not held:
            held["x"] = next(iter(make_loader(bundle.train, 64, bundle.preprocess, workers=workers))).to(device).inputs
        model.eval()
        with autocast(device, bf16):
            model.features(held["x"])

    return choose_bf16(precision, device, forward_pass)


def can_cache(cfg: RunConfig) -> bool:
    """Features are fixed only when every epoch sees the same pixels: no per-sample augmentation."""
    return cfg.train.feature_cache != "off" and parse_augment(cfg.data.augment).is_identity
