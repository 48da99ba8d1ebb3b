"""Loss functions by name, each taking logits and either integer labels or per-class targets (one-hot,
label-smoothed, or the soft targets Mixup/CutMix make).

    cross-entropy            Keras' sparse_categorical_crossentropy / categorical_crossentropy
    label-smoothing=<eps>    cross-entropy against (1 - eps) * one-hot + eps / classes
    mse                      mean squared error between softmax probabilities and one-hot targets. The
                             article lists it; it trains worse because its gradient through the softmax
                             vanishes when the model is confidently wrong (p_true -> 0 gives no push).
    focal[=<gamma>]          Lin et al. 2017: cross-entropy scaled by (1 - p)^gamma, so easy examples
                             count less; gamma defaults to 2.

`class_weight` ("balanced" or a list) multiplies each example's loss by its class's weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config.loss import parse_loss
from ..errors import DaxiaoError


def class_weights(spec: str | None, counts: list[int]) -> torch.Tensor | None:
    """'balanced' -> n / (classes * count) (scikit-learn's rule); '1,2,1' -> those numbers; None -> None."""
    if not spec:
        return None
    if spec == "balanced":
        n, k = sum(counts), len(counts)
        return torch.tensor([n / (k * max(c, 1)) for c in counts], dtype=torch.float32)
    try:
        w = [float(x) for x in spec.split(",")]
    except ValueError:
        raise DaxiaoError(f"class_weight must be 'balanced' or numbers like 1,2,1 (received {spec!r}).") from None
    if len(w) != len(counts) or min(w) < 0:
        raise DaxiaoError(f"class_weight needs {len(counts)} non-negative numbers, one per class (received {spec!r}).")
    return torch.tensor(w, dtype=torch.float32)


class ClassifierLoss(nn.Module):
    """One module for every loss: logits (B, K) and targets (B,) int or (B, K) float -> mean loss."""

    def __init__(self, name: str = "cross-entropy", arg: float | None = None, weight: torch.Tensor | None = None):
        super().__init__()
        self.name, self.arg = name, arg
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.name == "cross-entropy" and target.ndim == 1:
            return F.cross_entropy(logits, target, weight=self.weight)  # the common fast path
        k = logits.shape[1]
        soft = F.one_hot(target, k).float() if target.ndim == 1 else target.float()
        if self.name == "label-smoothing":
            eps = 0.1 if self.arg is None else self.arg
            soft = soft * (1 - eps) + eps / k
        logp = logits.log_softmax(1)
        if self.name == "mse":
            per_example = (logp.exp() - soft).pow(2).mean(1)
        elif self.name == "focal":
            gamma = 2.0 if self.arg is None else self.arg
            per_example = -(soft * (1 - logp.exp()).pow(gamma) * logp).sum(1)
        else:
            per_example = -(soft * logp).sum(1)
        if self.weight is None:
            return per_example.mean()
        w = soft @ self.weight  # each example's class weight (mixed for soft targets)
        return (per_example * w).sum() / w.sum()  # as F.cross_entropy's weighted mean


def build_criterion(spec: str = "cross-entropy", weight: torch.Tensor | None = None) -> ClassifierLoss:
    """The loss named by `spec` (see module docstring), with optional per-class weights."""
    name, arg = parse_loss(spec)
    return ClassifierLoss(name, arg, weight)
