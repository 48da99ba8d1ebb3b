"""Readers of trained models, all through `load_run`: the evaluation report, predict, profile, embed."""

from .predict import predict
from .report import evaluate_model

__all__ = ["evaluate_model", "predict"]
