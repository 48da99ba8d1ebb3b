"""Arrays in, a `DataBundle` out: what `fit(model, x, y)` and the scikit-learn estimator train on.

Images may be shaped (N, H, W), (N, H, W, C) as Keras has them, (N, C, H, W), or (N, H*W) for square
greyscale images (scikit-learn's ``load_digits().data``); numpy arrays or tensors. Labels are class
indices (N,) or one-hot rows (N, K), as Keras' sparse and categorical losses take them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DaxiaoError
from .bundle import DataBundle, TensorSplit, channel_stats
from .preprocess import Preprocess


def to_uint8_images(X, scale: tuple[float, float] | None = None) -> tuple[torch.Tensor, tuple[float, float]]:
    """An array of images in any of the layouts above -> uint8 (N, C, H, W), and the (low, high) range
    mapped onto 0..255 (taken from X unless given: predict reuses the range fit saw)."""
    x = np.asarray(X)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DaxiaoError(f"X must be a numeric array of images (received dtype {x.dtype}).")
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise DaxiaoError(f"X has {x.shape[1]} features per row, not a square number: pass images shaped "
                              "(N, H, W) or (N, H, W, C).")
        x = x.reshape(len(x), side, side)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):  # Keras' channels-last
        x = x.transpose(0, 3, 1, 2)
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise DaxiaoError(f"X must be images shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with 1 or 3 channels "
                          f"(received shape {np.shape(X)}).")
    if x.shape[2] != x.shape[3]:
        raise DaxiaoError(f"ImageClassifier takes square images (received {x.shape[2]}x{x.shape[3]}); resize them "
                          "first.")
    if scale is None:
        scale = (0.0, 255.0) if x.dtype == np.uint8 else (float(x.min()), float(x.max()))
    lo, hi = scale
    u8 = np.clip(np.rint((x.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-12))), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(u8)), scale


def to_labels(y, n: int, what: str = "y") -> torch.Tensor:
    """Class indices (N,) from indices or one-hot rows (N, K)."""
    y = y.detach().cpu().numpy() if torch.is_tensor(y) else np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot (categorical_crossentropy's targets)
        y = y.argmax(1)
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1 or len(y) != n:
        raise DaxiaoError(f"{what} must hold one label per image: shape ({n},) or one-hot ({n}, classes) "
                          f"(received {y.shape}).")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise DaxiaoError(f"{what} must be integer class indices 0..K-1 or one-hot rows (received {y.dtype} values).")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DaxiaoError(f"{what} has negative labels; class indices run from 0 to K-1.")
    return torch.from_numpy(y)


def bundle_from_arrays(x, y, num_classes: int | None = None, validation_split: float = 0.0,
                       validation_data: tuple | None = None) -> DataBundle:
    """Train (and validation) splits from arrays, as Keras' `fit` reads them.

    `validation_data` = (x_val, y_val) wins; else `validation_split` holds out the LAST fraction of the
    samples, before any shuffling (Keras' rule, so the same call selects the same images); else there is
    no validation split. Pixel values are mapped onto 0..255 from the training array's range (uint8 as
    it is) and normalized by the training split's per-channel statistics.
    """
    images, scale = to_uint8_images(x)
    labels = to_labels(y, len(images))
    val = None
    if validation_data is not None:
        if len(validation_data) != 2:
            raise DaxiaoError("validation_data must be a pair (x_val, y_val).")
        vi, _ = to_uint8_images(validation_data[0], scale)
        val = TensorSplit(vi, to_labels(validation_data[1], len(vi), "validation_data's y"))
    elif validation_split:
        if not 0 < validation_split < 1:
            raise DaxiaoError(f"validation_split must be in (0, 1) (received {validation_split}).")
        cut = len(images) - max(1, int(len(images) * validation_split))
        if cut < 1:
            raise DaxiaoError(f"Too few images ({len(images)}) to hold out validation_split={validation_split}.")
        val = TensorSplit(images[cut:], labels[cut:])
        images, labels = images[:cut], labels[:cut]
    k = num_classes or int(max(labels.max(), val.labels.max() if val is not None else 0)) + 1
    if int(labels.max()) >= k or (val is not None and int(val.labels.max()) >= k):
        raise DaxiaoError(f"Labels go up to {int(labels.max())}, but the model has {k} outputs; create it with "
                          f"num_classes={int(labels.max()) + 1}.")
    train = TensorSplit(images, labels)
    mean, std = channel_stats(images)
    pre = Preprocess(images.shape[-1], images.shape[1], "squash", mean, std)
    return DataBundle(train, val, None, [str(i) for i in range(k)], pre, "arrays")
