"""Datasets -> splits -> loaders -> `Batch`es. Small built-in sets live in memory as uint8 tensors and are
batched on tensors; image folders and CSV lists go through a DataLoader with workers. Every loader
yields `Batch`es of normalized inputs, so the training loop cannot tell the sources apart.

The names below are imported on first use (PEP 562): `import daxiao.data.decode` or `.preprocess` (the
torch-free modules the ONNX runtime uses) must not import torch through this package's __init__.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "bundle_from_arrays": "arrays", "to_uint8_images": "arrays", "BUILTIN": "builtin",
    "DataBundle": "bundle", "FeatureSplit": "bundle", "FileSplit": "bundle", "Split": "bundle",
    "TensorSplit": "bundle", "channel_stats": "bundle", "stratified_split": "bundle", "subset": "bundle",
    "load_data": "load", "Batch": "loaders", "FileLoader": "loaders", "TensorLoader": "loaders",
    "epoch_seed": "loaders", "make_loader": "loaders", "Preprocess": "preprocess",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'daxiao.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
